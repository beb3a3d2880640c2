"""The ``jupyter-imgclass`` command: the same engine without a notebook.

Progress goes to stderr, results to stdout (one JSON object, or one JSON line per image
with ``--json``). ``--help`` shows :data:`DESCRIPTION` and :data:`EXAMPLES`, plain text.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from .errors import ImgClassError
from .training.events import ENDED, Event
from .training.options import TrainOptions, choices_of, option_fields
from .vocabulary import EXPORT_FORMATS, KINDS, MODEL_FORMATS, figure

ITERATION_HELP = "which iteration: a number or its name (Iteration2); the latest by default"
DESCRIPTION = "jupyter-imgclass: the same image-classifier engine without a notebook."
EXAMPLES = """examples:
  jupyter-imgclass train photos/ --project projects/fruit --json
  jupyter-imgclass predict projects/fruit new/ --json
  jupyter-imgclass export projects/fruit --out bundle/ --format onnx onnx-int8 openvino
  jupyter-imgclass export-dataset projects/fruit data/fruit --format csv
  jupyter-imgclass import-customvision --endpoint URL --training-key-file key.txt \\
      --project-id GUID --out projects/from-azure
  jupyter-imgclass serve bundle/ --port 8000 --key SECRET
  jupyter-imgclass dockerfile bundle/
  jupyter-imgclass demo

Progress goes to stderr, results to stdout."""


def _say(args, line: str) -> None:
    """A line on stderr, unless ``--quiet``."""
    if not getattr(args, "quiet", False):
        print(line, file=sys.stderr)


def _progress(args) -> callable:
    """A progress printer on stderr (a bar when stderr is a terminal)."""
    tty = sys.stderr.isatty() and not getattr(args, "quiet", False)

    def show(event: dict) -> None:
        if getattr(args, "quiet", False):
            return
        if "phase" in event:
            done, total = event.get("done"), event.get("total")
            text = event["phase"] + (f" {done}/{total}" if total else "")
            if event.get("message"):
                text += f": {event['message']}"
        elif event.get("event") == Event.EPOCH:
            text = f"epoch {event.get('epoch')}/{event.get('epochs') or '?'}"
            for key in ("loss", "val_loss", "val_accuracy"):
                if isinstance(event.get(key), int | float):
                    text += f" {key} {figure(event[key])}"
        else:
            return
        if tty:
            sys.stderr.write("\r\x1b[2K" + text[:120])
            if event.get("phase") in ENDED:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    return show


def cmd_train(args) -> int:
    from .platform import runtime
    from .project import Project

    options = _train_options(args)  # every option checked before anything is imported
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        raise ImgClassError(f"{data_dir}: not a folder of images (root/<tag>/*.jpg)")
    try:
        processes = runtime.start_processes(args.coordinator, args.num_processes, args.process_id)
    except ValueError as exc:
        raise ImgClassError(str(exc).replace("num_processes", "--num-processes")) from None
    import jax

    if processes > 1:
        _keep_stdout_for_results()
    rank = jax.process_index()
    project_dir = Path(args.project)
    report = None
    if rank == 0:  # process 0 imports and writes the project; the others read it
        if (project_dir / "project.sqlite").exists():
            project = Project.open(project_dir)
        else:
            project = Project.create(project_dir, kind=args.kind)
        report = project.add_folder(data_dir)
        _say(args, f"import: {report.summary()}")
    runtime.barrier("imgclass-imported")
    if rank != 0:
        project = Project.open(project_dir)
    with project:
        run = project.train(
            **dataclasses.asdict(options),
            coordinator=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
        run.on_event(_progress(args))
        iteration = run.wait()
        fit = iteration.record.fit or {}
        layout = {
            "processes": processes,
            "process_id": rank,
            "devices": len(jax.devices()),
            "batch_size": fit.get("batch_size"),
            "precision": fit.get("precision"),
        }
        _print_training(args, project, iteration, run, report, extra=layout)
    return 0


def _keep_stdout_for_results() -> None:
    """Sends what C++ libraries print on file 1 (gloo's "connected to 1 peer ranks") to
    stderr, keeping stdout for the results."""
    import os

    sys.stdout.flush()
    results = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(results, "w", buffering=1)


def _print_training(args, project, iteration, run, report, routes=None, extra=None) -> None:
    """What ``train`` and ``demo`` print: one JSON object with ``--json``, else a line."""
    if args.json:
        record = {
            "project": str(project.path),
            "project_id": project.id,
            "iteration": iteration.number,
            "status": iteration.status,
            "model": iteration.model,
            "input_size": iteration.input_size,
            "resize": iteration.resize,
            "metrics": iteration.metrics,
            "evaluation": iteration.evaluation,
            "backbone_choice": iteration.record.backbone_choice,
            "warnings": run.warnings,
            "import": report.to_json() if report is not None else None,
            **(extra or {}),
        }
        if routes:
            record["routes"] = routes
        print(json.dumps(record), flush=True)
    else:
        print(iteration)
        for w in run.warnings:
            print(f"warning: {w}", file=sys.stderr)


def _expand(paths: list[str]) -> list[Path]:
    """The files to predict: each file named, and the image files (by extension, hidden
    ones left out) under each folder named; a README beside the images is not an image."""
    from .data.images import sniff_is_image_name

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and not f.name.startswith(".") and sniff_is_image_name(f)
            )
        else:
            out.append(p)
    return out


PREDICT_CHUNK = 16
"""Images per call to the predictor in ``predict`` (one forward pass each)."""
PREDICT_OUTPUTS = (".csv", ".jsonl")


def _open_model(args):
    """``(model, label, close)`` for ``predict``: a bundle folder (it has ``model.json``)
    through ``ic.load_model``, else a project's iteration (``--iteration``, the latest
    by default)."""
    from .publish.bundle import METADATA_FILE, load_model

    source = Path(args.model)
    if (source / METADATA_FILE).is_file():
        if args.iteration is not None:
            raise ImgClassError(
                f"--iteration {args.iteration}: {source} is a bundle, which holds one iteration"
            )
        model = load_model(source)
        return model, f"bundle {source} ({model.published_name or model.model_name})", None
    from .project import Project

    project = Project.open(source, readonly=True)
    try:
        iteration = project.iteration(args.iteration)
    except BaseException:
        project.close()
        raise
    return iteration, f"{iteration.published_name} of project {project.name}", project.close


def _predict_rows(predictor, paths):
    """``(path, predictions or None, error or None)`` per path, in order: a chunk of
    :data:`PREDICT_CHUNK` images per forward pass, one at a time where a chunk has an
    image that cannot be read (so every other image of it is still answered)."""
    from .errors import BadImageError

    for start in range(0, len(paths), PREDICT_CHUNK):
        chunk = paths[start : start + PREDICT_CHUNK]
        try:
            results = predictor.predict([str(p) for p in chunk])
        except (BadImageError, OSError):
            for path in chunk:
                try:
                    yield path, predictor.predict([str(path)])[0], None
                except (BadImageError, OSError) as exc:
                    yield path, None, str(exc)
            continue
        yield from ((path, preds, None) for path, preds in zip(chunk, results, strict=True))


def _prediction_json(p, thresholds) -> dict:
    """One prediction as the hosted API names its fields, with the tag's threshold."""
    out = {"tagName": p.tag, "probability": round(float(p.probability), 6)}
    if p.above_threshold is not None:
        out["threshold"] = thresholds.get(p.tag)
        out["aboveThreshold"] = p.above_threshold
    return out


def _prediction_text(p) -> str:
    """``cat 0.970 (above threshold)``: a tag, its probability, and whether it passes."""
    return f"{p.tag} {p.probability:.3f}" + (" (above threshold)" if p.above_threshold else "")


def _predictions_csv(rows, tags, thresholds) -> str:
    """``path,error,tag,probability,threshold,aboveThreshold`` and one probability column
    per tag (the top tag in ``tag`` with its threshold; the two empty for a model without
    thresholds)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "error", "tag", "probability", "threshold", "aboveThreshold", *tags])
    for path, preds, error in rows:
        if preds is None:
            writer.writerow([str(path), error, "", "", "", "", *([""] * len(tags))])
            continue
        by_tag = {p.tag: p.probability for p in preds}
        top = preds[0]
        above = "" if top.above_threshold is None else str(top.above_threshold).lower()
        threshold = "" if top.tag not in thresholds else f"{thresholds[top.tag]:.6g}"
        writer.writerow(
            [str(path), "", top.tag, f"{top.probability:.6f}", threshold, above]
            + [f"{by_tag[t]:.6f}" for t in tags]
        )
    return buffer.getvalue()


def cmd_predict(args) -> int:
    from .data.integrity import atomic_write

    output = Path(args.output) if args.output else None
    if output is not None and output.suffix.lower() not in PREDICT_OUTPUTS:
        raise ImgClassError(
            f"--output {output}: the name must end in {' or '.join(PREDICT_OUTPUTS)} "
            "(the format follows it)"
        )
    model, label, close = _open_model(args)
    try:
        predictor = model.predictor
        thresholds = dict(predictor.thresholds)
        shown = ", ".join(f"{t} {thresholds[t]:.2f}" for t in predictor.tags if t in thresholds)
        _say(args, f"{label}: thresholds {shown or 'none'}")
        rows, records = [], []
        for path, preds, error in _predict_rows(predictor, _expand(args.paths)):
            rows.append((path, preds, error))
            if preds is None:
                record = {"path": str(path), "error": error}
                text = f"{path}: error: {error}"
            else:
                record = {
                    "path": str(path),
                    "predictions": [_prediction_json(p, thresholds) for p in preds],
                }
                text = f"{path}: " + ", ".join(_prediction_text(p) for p in preds[:3])
            records.append(record)
            if output is None:
                print(json.dumps(record) if args.json else text, flush=True)
        failures = sum(preds is None for _, preds, _ in rows)
        if output is not None:
            if output.suffix.lower() == ".jsonl":
                content = "".join(json.dumps(record) + "\n" for record in records)
            else:
                content = _predictions_csv(rows, predictor.tags, thresholds)
            atomic_write(output, content.encode())
            _say(args, f"{len(rows)} images ({failures} failed) written to {output}")
    finally:
        if close is not None:
            close()
    return 1 if failures and args.strict else 0


def cmd_export(args) -> int:
    from .project import Project

    with Project.open(args.project) as project:
        iteration = project.iteration(args.iteration)
        out = iteration.export(
            args.out, onnx=args.onnx, formats=args.format or (), overwrite=args.overwrite
        )
        meta = json.loads((out / "model.json").read_text())
        if args.json:
            record = {
                "bundle": str(out),
                "iteration": iteration.number,
                "published_name": meta["published_name"],
                "project_id": meta.get("project_id"),
                "files": sorted(meta["files"]),
                "onnx": "onnx" in meta,
                "formats": meta.get("formats", {}),
                "check": meta.get("check"),
                "native": meta.get("native"),
            }
            print(json.dumps(record))
        else:
            print(str(out))
            from .publish.formats import agreement_table

            table = agreement_table(meta)
            if table:
                print("\n".join(["", *table]))
            for name, fmt in (meta.get("formats") or {}).items():
                if fmt.get("flag"):
                    print(f"WARNING: {name}: {fmt['flag']}", file=sys.stderr)
    return 0


def cmd_import_customvision(args) -> int:
    from .project.customvision import TRAINING_KEY_ENV, import_customvision
    from .publish.serve import read_key

    key = read_key(None, args.training_key_file, env=TRAINING_KEY_ENV)
    if not key:
        raise ImgClassError(
            f"training key: give --training-key-file FILE or set ${TRAINING_KEY_ENV}"
        )

    def progress(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            _say(args, f"images {done}/{total}")

    report = import_customvision(
        args.endpoint, key, args.project_id, args.out, on_progress=progress
    )
    print(json.dumps(report.to_json()) if args.json else repr(report))
    return 0 if report.complete else 1


def cmd_backup(args) -> int:
    from .project import Project

    with Project.open(args.project) as project:
        out = project.backup(args.out)
        report = project.open_report
    images = len(list(out.glob("images/*/*")))
    if args.json:
        print(json.dumps({"backup": str(out), "images": images}))
    else:
        print(f"{images} images, the database and the iterations copied to {out}")
    if not report.clean:
        print(f"note: {report.summary()}", file=sys.stderr)
    return 0


def cmd_export_dataset(args) -> int:
    from .project import Project

    with Project.open(args.project) as project:
        report = project.export_dataset(
            args.out,
            args.format,
            include_untagged=not args.no_untagged,
            overwrite=args.overwrite,
        )
        opened = project.open_report
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(repr(report))
    if not opened.clean:
        print(f"note: {opened.summary()}", file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    from .errors import BundleError
    from .project import Project
    from .publish.serve import KEY_ENV, read_key, serve_forever

    key = read_key(args.key, args.key_file)
    options = {
        "host": args.host,
        "port": args.port,
        "key": key,
        "project_id": _project_id(args.project_id),
        "published_name": _published_name(args.published_name),
        "allow_urls": args.allow_url or (),
        "cors_origins": args.cors or (),
        "host_names_extra": args.host_name or (),
        "log_level": "warning" if getattr(args, "quiet", False) else "info",
        "access_log": "off" if getattr(args, "quiet", False) else args.access_log,
        "metrics": not args.no_metrics,
    }
    if key is None:
        print(
            "warning: serving without a key (--key-file FILE or $" + KEY_ENV + "): anyone who "
            f"can reach {args.host}:{args.port} can call the model",
            file=sys.stderr,
        )
    elif args.key is not None:
        print(
            "note: a key given with --key shows in the process list; --key-file FILE or $"
            + KEY_ENV
            + " keep it private",
            file=sys.stderr,
        )
    if args.workspace is not None:
        return _serve_workspace(args, options)
    if args.path is None:
        raise ImgClassError("serve: name a project folder or bundle, or --workspace DIR")
    folder = Path(args.path)
    if (folder / "model.json").is_file():
        serve_forever(folder, **options)
        return 0
    if not (folder / "project.sqlite").is_file():
        raise BundleError(f"{folder}: neither a model bundle (model.json) nor a project folder")
    with Project.open(folder) as project:
        iteration = project.iteration(args.iteration)
        logger = project.prediction_logger(
            iteration.name,
            keep_images=not args.no_keep,
            quota_bytes=int(args.keep_quota_mb * 1_000_000) if args.keep_quota_mb else None,
            retention_days=args.keep_days,
        )
        serve_forever(iteration, log_callback=logger, **options)
    return 0


def _serve_workspace(args, options: dict) -> int:
    """``serve --workspace DIR``: every project's published iterations and the Training API."""
    from .project.training_api import TRAINING_KEY_ENV, TRAINING_PREFIXES, workspace_options
    from .publish.serve import read_key, serve_forever

    if args.path is not None or args.iteration is not None or args.project_id is not None:
        raise ImgClassError(
            "serve --workspace: serves every project of the folder by its own id and published "
            "names; drop PATH, --iteration and --project-id"
        )
    if args.published_name is not None:
        raise ImgClassError(
            "serve --workspace: publish each iteration under its name with publish_iteration; "
            "drop --published-name"
        )
    training_key = read_key(args.training_key, args.training_key_file, env=TRAINING_KEY_ENV)
    if training_key is None:
        print(
            "note: the Training API is off (no --training-key-file FILE or $"
            + TRAINING_KEY_ENV
            + "): its routes answer 401",
            file=sys.stderr,
        )
    elif args.training_key is not None:
        print(
            "note: a key given with --training-key shows in the process list; "
            "--training-key-file FILE or $" + TRAINING_KEY_ENV + " keep it private",
            file=sys.stderr,
        )
    served = workspace_options(args.workspace, training_key=training_key)
    options.pop("project_id", None)
    options.pop("published_name", None)
    base = f"http://{args.host}:{args.port}"
    print(f"     workspace: {Path(args.workspace).resolve()}", flush=True)
    print(f"  training API: {base}{TRAINING_PREFIXES[-1]}/projects", flush=True)
    print(
        f"    prediction: POST {base}/customvision/v3.0/Prediction/{{projectId}}/classify/"
        "iterations/{publishedName}/image",
        flush=True,
    )
    serve_forever(None, **served, **options)
    return 0


def cmd_dockerfile(args) -> int:
    from .publish.dockerfile import write_dockerfile
    from .publish.serve.server import KEY_ENV

    path = write_dockerfile(
        args.bundle,
        args.out,
        port=args.port,
        base_image=args.base_image,
        package=args.package,
        wheel=args.wheel,
        overwrite=args.overwrite,
        published_name=_published_name(args.published_name),
    )
    if args.json:
        print(json.dumps({"dockerfile": str(path), "context": str(path.parent)}))
    else:
        print(f"wrote {path} and {path.parent / '.dockerignore'}")
        print(f"  docker build -t imgclass-model {path.parent}")
        print(
            f"  docker run --rm -p 127.0.0.1:{args.port}:{args.port} -e {KEY_ENV}=... "
            "imgclass-model"
        )
    return 0


def _published_name(given: str | None) -> str | None:
    """``--published-name``: what the routes answer to, as the hosted publish name rule."""
    from .vocabulary import check_publish_name

    return None if given is None else check_publish_name(given, "--published-name")


def _project_id(given: str | None) -> str | None:
    """``--project-id``: a UUID (the one an existing app of the hosted service uses)."""
    import uuid

    if given is None:
        return None
    try:
        return str(uuid.UUID(given))
    except ValueError:
        raise ImgClassError(
            f"--project-id {given!r}: expected a UUID such as 0f8fad5b-d9cb-469f-a165-70867728950e"
        ) from None


def cmd_demo(args) -> int:
    from .data import datasets
    from .project import Project

    project_dir = Path(args.project)
    project = (
        Project.open(project_dir)
        if (project_dir / "project.sqlite").exists()
        else Project.create(project_dir)
    )
    with project:
        ds = datasets.digits().subset(args.per_class, seed=0)
        report = ds.to_project(project)
        _say(args, f"import: {report.summary()}")
        run = project.train(**dataclasses.asdict(_train_options(args)))
        run.on_event(_progress(args))
        iteration = run.wait()
        if args.serve_seconds == 0:
            _print_training(args, project, iteration, run, report)
            return 0
        server = iteration.serve(port=args.port)
        try:
            _print_training(args, project, iteration, run, report, routes=server.routes)
            if not args.json:
                print(_report_text(iteration))
                print(f"serving {iteration.name} at {server.routes['image']}")
                until = "Ctrl+C" if args.serve_seconds is None else f"{args.serve_seconds:g} s"
                print(f"(POST an image there; stops after {until})", flush=True)
            _wait(args.serve_seconds)
        finally:
            server.stop()
    return 0


def _wait(seconds: float | None) -> None:
    """Sleeps ``seconds`` (forever when None); Ctrl+C ends the wait quietly."""
    try:
        if seconds is None:
            while True:
                time.sleep(3600)
        time.sleep(seconds)
    except KeyboardInterrupt:
        pass


def _report_text(iteration) -> str:
    """The report in plain text: what the metrics rest on, overall and per tag."""
    metrics = iteration.metrics
    overall = metrics["overall"]
    lines = [f"{iteration.name}: {iteration.evaluation_text()}"]
    lines.append(f"images: {iteration.input_text()}")
    if iteration.unlabelled_text():
        lines.append(f"untagged images: {iteration.unlabelled_text()}")
    if iteration.choice_text():
        lines.append(f"backbone: {iteration.choice_text()}")
    if overall.get("accuracy") is not None:
        lines.append(f"accuracy {overall['accuracy']:.3f}")
    lines.append(f"{'tag':<16}{'precision':>10}{'recall':>8}{'AP':>7}{'images':>8}")
    for tag, m in metrics["per_tag"].items():
        lines.append(
            f"{tag:<16}{m['precision']:>10.3f}{m['recall']:>8.3f}"
            f"{m['average_precision']:>7.3f}{m['count']:>8}"
        )
    return "\n".join(lines)


def _add_train_options(parser: argparse.ArgumentParser, only=None) -> None:
    """One argument per :class:`TrainOptions` field (or those named in ``only``): flag,
    type, help and choices come from the field, so the command line cannot drift from
    ``Project.train``."""
    for field in option_fields():
        if only is not None and field.name not in only:
            continue
        flag = isinstance(field.default, bool)
        default = ("yes" if field.default else "no") if flag else field.default
        shown = "" if field.default is None else f" ({default})"
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=field.metadata["type"],
            default=field.default,
            choices=choices_of(field),
            metavar="{yes,no}" if flag else None,
            help=field.metadata["help"] + shown,
        )


def _train_options(args) -> TrainOptions:
    """The :class:`TrainOptions` of the parsed command line (checked now)."""
    names = [f.name for f in option_fields()]
    return TrainOptions.from_keywords(**{n: getattr(args, n) for n in names if hasattr(args, n)})


def build_parser() -> argparse.ArgumentParser:
    plain = {"color": False} if sys.version_info >= (3, 14) else {}  # --help: plain text
    parser = argparse.ArgumentParser(
        prog="jupyter-imgclass",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **plain,
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    # --quiet also after the command (``demo --quiet``); SUPPRESS keeps the top-level value
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress on stderr"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common], **plain)

    t = command("train", help="import a folder (sub-folders are tags) and train")
    t.add_argument("data_dir")
    t.add_argument("--project", required=True, help="project folder (created if missing)")
    t.add_argument(
        "--kind",
        default="multiclass",
        choices=KINDS,
        help="one tag per image (multiclass) or any number (multilabel)",
    )
    _add_train_options(t)
    t.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="process 0's address, to train over several processes or hosts",
    )
    t.add_argument("--num-processes", type=int, default=None, help="processes taking part")
    t.add_argument("--process-id", type=int, default=None, help="this process: 0 to N-1")
    t.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    t.set_defaults(func=cmd_train)

    p = command("predict", help="predict tags for images or folders")
    p.add_argument("model", help="a project folder, or a bundle folder written by `export`")
    p.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--iteration", default=None, help=ITERATION_HELP)
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON line per image: tagName, probability, threshold, aboveThreshold",
    )
    p.add_argument(
        "--output",
        metavar="FILE",
        help="write every answer to FILE instead of stdout: .csv (a row per image, a column "
        "per tag) or .jsonl (the --json lines)",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when any image failed")
    p.set_defaults(func=cmd_predict)

    e = command("export", help="write a portable model bundle")
    e.add_argument("project", help="project folder")
    e.add_argument("--out", required=True, help="the bundle folder to write (new or empty)")
    e.add_argument("--iteration", default=None, help=ITERATION_HELP)
    e.add_argument("--onnx", action="store_true", help="also write model.onnx (= --format onnx)")
    e.add_argument(
        "--format",
        nargs="+",
        choices=MODEL_FORMATS,
        default=None,
        metavar="FORMAT",
        help="model formats beside the weights: onnx (float32), onnx-int8 (onnxruntime's "
        "static quantization, calibrated on the project's images), openvino (OpenVINO IR, "
        "FP16 weights; needs pip install openvino). Each is run on up to 200 of the "
        "project's images against the native model and the agreement table printed and "
        "stored in model.json",
    )
    e.add_argument("--overwrite", action="store_true", help="replace a bundle in --out")
    e.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout (with the formats' agreement)",
    )
    e.set_defaults(func=cmd_export)

    m = command(
        "import-customvision",
        help="bring a hosted Custom Vision project here: images, tags (Negative too), untagged",
    )
    m.add_argument(
        "--endpoint",
        required=True,
        help="the resource's endpoint, https://<resource>.cognitiveservices.azure.com",
    )
    m.add_argument(
        "--training-key-file",
        metavar="FILE",
        help="a file whose first line is the training key (default: $IMGCLASS_TRAINING_KEY)",
    )
    m.add_argument("--project-id", required=True, help="the hosted project's id (a GUID)")
    m.add_argument(
        "--out",
        required=True,
        help="the project folder to create; run again with the same folder to resume",
    )
    m.add_argument(
        "--json", action="store_true", help="print one JSON object (counts, failures) on stdout"
    )
    m.set_defaults(func=cmd_import_customvision)

    b = command("backup", help="copy a project, safely even while a kernel has it open")
    b.add_argument("project")
    b.add_argument("out", help="a new or empty folder")
    b.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    b.set_defaults(func=cmd_backup)

    x = command(
        "export-dataset", help="write the images and tags out as a folder per tag, CSV or COCO"
    )
    x.add_argument("project", help="project folder")
    x.add_argument("out", help="a new or empty folder (or an earlier export, with --overwrite)")
    x.add_argument(
        "--format",
        default="folder",
        choices=EXPORT_FORMATS,
        help="folder: <tag>/<file> (add_folder reads it back; one tag per image); "
        "csv: images/ + labels.csv (add_csv reads it back); coco: images/ + "
        "annotations.json (default: folder)",
    )
    x.add_argument("--no-untagged", action="store_true", help="leave the untagged images out")
    x.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT")
    x.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    x.set_defaults(func=cmd_export_dataset)

    s = command("serve", help="serve a project's iteration, a bundle or a workspace over HTTP")
    s.add_argument(
        "path", nargs="?", default=None, help="project folder or exported bundle (or --workspace)"
    )
    s.add_argument(
        "--workspace",
        default=None,
        metavar="DIR",
        help="serve a folder of project folders instead: the prediction routes of every "
        "published iteration (by project id and published name) and the Training API",
    )
    s.add_argument(
        "--training-key-file",
        default=None,
        metavar="FILE",
        help="with --workspace: the Training API's Training-Key from FILE's first line (also: "
        "$IMGCLASS_TRAINING_KEY); without a key the Training API answers 401",
    )
    s.add_argument(
        "--training-key",
        default=None,
        help="with --workspace: the Training-Key itself (shows in the process list; prefer "
        "--training-key-file)",
    )
    s.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)"
    )
    s.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    s.add_argument("--key", default=None, help="require this Prediction-Key header")
    s.add_argument(
        "--key-file",
        default=None,
        metavar="FILE",
        help="read the Prediction-Key from FILE's first line (also: $IMGCLASS_PREDICTION_KEY)",
    )
    s.add_argument(
        "--cors",
        action="append",
        metavar="ORIGIN",
        help="let web pages of ORIGIN (https://app.example.com) call the service (repeatable); "
        "other origins are refused",
    )
    s.add_argument(
        "--host-name",
        action="append",
        metavar="NAME",
        help="a name clients reach the server by, besides the bind address (repeatable)",
    )
    s.add_argument("--iteration", default=None, help=ITERATION_HELP)
    s.add_argument(
        "--project-id",
        default=None,
        help="answer the hosted routes for this project UUID (default: the project's own)",
    )
    s.add_argument(
        "--published-name",
        default=None,
        metavar="NAME",
        help="answer the routes under this published name, the one an existing app of the "
        "hosted service calls (default: the iteration's name, Iteration1, ...)",
    )
    s.add_argument(
        "--allow-url",
        action="append",
        metavar="PREFIX",
        help="allow classify-by-URL for URLs under this http(s) prefix (repeatable)",
    )
    s.add_argument("--keep-days", type=float, default=None, help="keep served images N days (30)")
    s.add_argument(
        "--keep-quota-mb", type=float, default=None, help="at most this much of them (1000)"
    )
    s.add_argument("--no-keep", action="store_true", help="do not keep served images")
    s.add_argument(
        "--access-log",
        default="json",
        choices=("json", "text", "off"),
        help="one line per request on stdout: json (time, method, path without the query, "
        "status, duration_ms, client; never a header or the key), uvicorn's text, or off "
        "(default: json; --quiet: off)",
    )
    s.add_argument(
        "--no-metrics",
        action="store_true",
        help="do not answer GET /metrics (Prometheus text, open without a key like /health)",
    )
    s.set_defaults(func=cmd_serve)

    k = command("dockerfile", help="write a Dockerfile that serves a bundle in a container")
    k.add_argument("bundle", help="an exported bundle folder (jupyter-imgclass export)")
    k.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="the build context to write into (default: the bundle's parent; a bundle "
        "outside DIR is copied in)",
    )
    k.add_argument(
        "--port", type=int, default=8000, help="port the server listens on in the container"
    )
    k.add_argument(
        "--base-image",
        default="python:3.12-slim",
        metavar="IMAGE",
        help="the Python image to build on (default: python:3.12-slim)",
    )
    k.add_argument(
        "--package",
        default=None,
        metavar="SPEC",
        help="what pip installs in the image (default: jupyter_imgclass==<this version>; "
        "a git+https:// URL works too)",
    )
    k.add_argument(
        "--wheel",
        default=None,
        metavar="FILE",
        help="install this wheel of the package instead (copied into the context; "
        "build one with: pip wheel --no-deps .)",
    )
    k.add_argument(
        "--published-name",
        default=None,
        metavar="NAME",
        help="serve the routes under this published name (the one an existing app calls; "
        "default: the bundle's)",
    )
    k.add_argument("--overwrite", action="store_true", help="replace a Dockerfile in DIR")
    k.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    k.set_defaults(func=cmd_dockerfile)

    d = command("demo", help="train on scikit-learn's digits in a new project")
    d.add_argument("--project", default="projects/digits-demo", help="project folder")
    d.add_argument("--per-class", type=int, default=30, help="digits per tag (30)")
    _add_train_options(d, only=("budget", "model"))
    d.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    d.add_argument(
        "--serve-seconds",
        type=float,
        default=None,
        help="serve the model for N seconds, then exit (default: until Ctrl+C; 0: do not serve)",
    )
    d.add_argument("--port", type=int, default=8000, help="port to serve on (8000; 0: any free)")
    d.set_defaults(func=cmd_demo)
    return parser


def _exit_now_if_distributed(code: int) -> None:
    """Ends a failed process of a multi-process run at once: JAX's exit handler would
    otherwise wait for the other processes and then abort with a stack trace."""
    from .platform import runtime

    if runtime.joined_processes() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jupyter-imgclass`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ImgClassError as exc:
        print(f"jupyter-imgclass: error: {exc}", file=sys.stderr)
        _exit_now_if_distributed(2)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
