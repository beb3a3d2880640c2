"""Bounded load test of the REST prediction service on 127.0.0.1.

Starts ``jupyter_imgclass.publish.serve.serve_forever`` on a bundle in a subprocess (so that the
clients do not share the server's interpreter), then:

1. single-image latency: one client, sequential requests;
2. for each concurrency level (16 and 64 by default): that many concurrent clients
   for ``--seconds`` seconds or ``--max-requests`` requests, whichever comes first.

Prints requests/s, p50/p99 latency and error counts by status. Only loopback; every
phase is bounded in count and time.

``--batch 32 64`` compares, on the same server, model and images, the images per second
of single requests (one client after another, and ``--concurrency`` clients whose
requests the server micro-batches) with the batch route (``.../images``, one client
sending multipart batches of each size), printed side by side.

Usage::

    python benchmarks/serve_load.py                      # random small_cnn bundle
    python benchmarks/serve_load.py --bundle out/model --seconds 10
    python benchmarks/serve_load.py --batch 16 64 --concurrency 16
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
        stderr=subprocess.DEVNULL,
    )


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Until ``/readyz`` answers 200: the server has compiled every batch size."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # a benchmark waiting for a subprocess, not a test
    raise SystemExit("server did not start in time")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


async def _post(
    reader, writer, host: str, path: str, body: bytes, ctype: str = "application/octet-stream"
) -> int:
    """One HTTP/1.1 keep-alive POST on an open connection; returns the status."""
    writer.write(
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: {ctype}\r\n"
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


def multipart(images: list[bytes]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with one ``imageData`` part per image."""
    boundary = "imgclass-bench-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="imageData"; '
        f'filename="{i}.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
        + data
        + b"\r\n"
        for i, data in enumerate(images)
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


async def load_phase(
    url: str,
    images: list[bytes],
    concurrency: int,
    seconds: float,
    max_requests: int,
    ctype: str = "application/octet-stream",
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
                    status = await _post(reader, writer, f"{host}:{port}", path, body, ctype)
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


def batch_comparison(base: str, name: str, images: list[bytes], args) -> list[dict]:
    """Images per second: single requests (sequential; concurrent) against the batch route
    at each ``--batch`` size, same server, model and images."""
    single_url = f"{base}/classify/iterations/{name}/image"
    batch_url = f"{base}/classify/iterations/{name}/images"
    rows = []
    for label, concurrency in (
        ("single, 1 client", 1),
        (f"single, {args.concurrency[0]} clients", args.concurrency[0]),
    ):
        r = asyncio.run(
            load_phase(single_url, images, concurrency, args.seconds, args.max_requests)
        )
        rows.append({"mode": label, "images_per_request": 1, **_per_image(r, 1)})
    for size in args.batch:
        chosen = [images[i % len(images)] for i in range(size)]
        body, ctype = multipart(chosen)
        r = asyncio.run(load_phase(batch_url, [body], 1, args.seconds, args.max_requests, ctype))
        rows.append(
            {
                "mode": f"batch of {size}, 1 client",
                "images_per_request": size,
                **_per_image(r, size),
            }
        )
    return rows


def _per_image(phase: dict, size: int) -> dict:
    return {
        "requests": phase["requests"],
        "seconds": phase["seconds"],
        "images_per_s": round(phase["requests_per_s"] * size, 1),
        "p50_ms": phase["p50_ms"],
        "errors": phase["errors"],
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
    parser.add_argument(
        "--batch",
        type=int,
        nargs="*",
        default=[],
        help="compare single requests with the batch route at these batch sizes (only that)",
    )
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
            if args.batch:
                rows = batch_comparison(base, name, images, args)
                _print_batch(meta["network"], images, rows)
                return
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


def _print_batch(network: str, images: list[bytes], rows: list[dict]) -> None:
    base = rows[0]["images_per_s"]
    print(
        f"network {network}, {len(images)} distinct {int(np.mean([len(b) for b in images]))}-byte "
        f"JPEGs, {os.cpu_count()} CPUs, server and clients on this machine (127.0.0.1)"
    )
    print(f"{'mode':<28}{'images/s':>10}{'x single':>10}{'requests':>10}{'p50 ms':>10}  errors")
    for row in rows:
        print(
            f"{row['mode']:<28}{row['images_per_s']:>10}{row['images_per_s'] / base:>10.2f}"
            f"{row['requests']:>10}{row['p50_ms']:>10}  {row['errors'] or 'none'}"
        )


if __name__ == "__main__":
    main()
