"""Bounded load test of the REST prediction service on 127.0.0.1.

Starts ``jupyter_imgclass.publish.serve.serve_forever`` on a bundle in a subprocess (so that the
clients do not share the server's interpreter), then:

1. single-image latency: one client, sequential requests;
2. for each concurrency level (16 and 64 by default): that many concurrent clients
   for ``--seconds`` seconds or ``--max-requests`` requests, whichever comes first.

Prints requests/s, p50/p99 latency and error counts by status. Only loopback; every
phase is bounded in count and time.

Usage::

    python benchmarks/serve_load.py                      # random small_cnn bundle
    python benchmarks/serve_load.py --bundle out/model --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_bundle(folder: Path, model_name: str, num_classes: int) -> Path:
    """A bundle with seeded random weights (load, not accuracy, is measured)."""
    from flax import nnx

    from jupyter_imgclass import models
    from jupyter_imgclass.models.weights import model_to_weights
    from jupyter_imgclass.publish.bundle import export_bundle

    spec = models.get(model_name)
    module = spec.create(num_classes, rngs=nnx.Rngs(0), pretrained=False)
    return export_bundle(
        folder / "bundle",
        model_name=model_name,
        tags=[f"tag{i}" for i in range(num_classes)],
        kind="multiclass",
        weights=model_to_weights(module),
        preprocessing=spec.to_json(),
        published_name="bench",
    )


def test_image(seed: int, size: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bundle: Path, port: int) -> subprocess.Popen:
    code = (
        "import sys; from jupyter_imgclass.publish.serve import serve_forever; "
        "serve_forever(sys.argv[1], host='127.0.0.1', port=int(sys.argv[2]))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(bundle), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # a benchmark waiting for a subprocess, not a test
    raise SystemExit("server did not start in time")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


async def _post(reader, writer, host: str, path: str, body: bytes) -> int:
    """One HTTP/1.1 keep-alive POST on an open connection; returns the status."""
    writer.write(
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    await reader.readexactly(length)
    return status


async def load_phase(
    url: str, images: list[bytes], concurrency: int, seconds: float, max_requests: int
) -> dict:
    """``concurrency`` keep-alive connections posting back to back (a lean asyncio client,
    so that the load generator costs little CPU next to the server)."""
    import urllib.parse

    import httpx

    parts = urllib.parse.urlsplit(url)
    host, port, path = parts.hostname, parts.port, parts.path
    latencies: list[float] = []
    statuses: collections.Counter = collections.Counter()
    sent = 0
    deadline = time.perf_counter() + seconds

    async def worker(wid: int) -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection(host, port)
        i = wid
        try:
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                body = images[i % len(images)]
                i += concurrency
                t0 = time.perf_counter()
                try:
                    status = await _post(reader, writer, f"{host}:{port}", path, body)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    statuses[type(exc).__name__] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                statuses[status] += 1
                latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - start
    ok = statuses.get(200, 0)
    health = httpx.get(f"http://{host}:{port}/health", timeout=30).json()
    return {
        "concurrency": concurrency,
        "requests": sum(statuses.values()),
        "seconds": round(elapsed, 2),
        "requests_per_s": round(ok / elapsed, 1),
        "p50_ms": round(1000 * percentile(latencies, 50), 2),
        "p99_ms": round(1000 * percentile(latencies, 99), 2),
        "errors": {str(k): v for k, v in statuses.items() if k != 200},
        "server_batches_so_far": health["batches"],
        "server_images_so_far": health["images"],
    }


def single_latency(url: str, images: list[bytes], n: int) -> dict:
    import httpx

    times = []
    with httpx.Client(timeout=60) as client:
        for i in range(n):
            t0 = time.perf_counter()
            r = client.post(
                url, content=images[i % len(images)], headers={"Content-Type": "image/jpeg"}
            )
            times.append(time.perf_counter() - t0)
            r.raise_for_status()
    return {
        "requests": n,
        "p50_ms": round(1000 * percentile(times, 50), 2),
        "p99_ms": round(1000 * percentile(times, 99), 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, help="exported bundle (default: random small_cnn)")
    parser.add_argument("--model", default="small_cnn", help="network for the random bundle")
    parser.add_argument("--seconds", type=float, default=5.0, help="per concurrency level")
    parser.add_argument("--max-requests", type=int, default=5000, help="per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--single", type=int, default=100, help="sequential requests")
    parser.add_argument("--image-size", type=int, default=256, help="side of the test JPEGs")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or make_bundle(Path(tmp), args.model, 10)
        meta = json.loads((Path(bundle) / "model.json").read_text())
        name = meta.get("published_name") or "default"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        url = f"{base}/classify/iterations/{name}/image"
        proc = start_server(Path(bundle), port)
        try:
            wait_ready(base, proc)
            images = [test_image(i, args.image_size) for i in range(32)]
            # warm-up: compile every batch size the micro-batcher may use
            asyncio.run(load_phase(url, images, 64, 30.0, 256))
            results = {
                "network": meta["network"],
                "image_bytes": int(np.mean([len(b) for b in images])),
                "cpus": os.cpu_count(),
                "single": single_latency(url, images, args.single),
                "load": [
                    asyncio.run(load_phase(url, images, c, args.seconds, args.max_requests))
                    for c in args.concurrency
                ],
            }
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(json.dumps(results, indent=2))
    print(
        f"\nsingle-image latency: p50 {results['single']['p50_ms']} ms, "
        f"p99 {results['single']['p99_ms']} ms"
    )
    for row in results["load"]:
        print(
            f"{row['concurrency']:>3} clients: {row['requests_per_s']:>7} req/s, "
            f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
            f"{row['requests']} requests in {row['seconds']} s, errors {row['errors'] or 'none'}"
        )


if __name__ == "__main__":
    main()
