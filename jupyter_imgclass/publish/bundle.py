"""Portable model bundles: ``weights.safetensors`` + ``model.json`` + ``README.md``.

A bundle is a folder that anyone can load with :func:`load_model` (or
``ic.load_model``) and that predicts exactly as the iteration it came from:

* ``weights.safetensors`` -- the flat weight dict, written with safetensors' numpy API
  (no pickle, nothing executable);
* ``model.json`` -- network name, tags with ids, preprocessing, thresholds, metrics,
  package and library versions, the published name, and the sha256 of every payload
  file, checked on load;
* ``README.md`` -- a model card for people;
* ``model.onnx`` -- optional, see :mod:`jupyter_imgclass.publish.onnx`;
* ``model.int8.onnx``, ``model.xml`` + ``model.bin`` -- optional int8 ONNX and OpenVINO
  IR, each run on the project's own images against the native model, the agreement
  table stored in ``model.json`` and shown in the README (see :mod:`.formats`).

Loading never executes code from the bundle: ``model.json`` is parsed as JSON, the
network is looked up by name in this package's registry, and the weights are read as
plain tensors. A missing, truncated or tampered bundle raises :class:`BundleError`.

Example::

    from jupyter_imgclass.publish.bundle import export_bundle, load_model

    path = export_bundle("out/fruit", model_name="small_cnn", tags=tags, kind="multiclass",
                         weights=weights, preprocessing=spec.to_json(), thresholds=None,
                         metrics=metrics, published_name="fruit-v1",
                         project_name="fruit", iteration_number=3)
    model = load_model(path)
    model.predict(["apple.jpg"])[0][0]   # Prediction('apple', 0.9700)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import shutil
from collections.abc import Mapping, Sequence
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import DEFAULT_RESIZE, RESIZE_MODES, describe_resize
from ..data.integrity import TMP_PREFIX, atomic_write, fsync_folder, staging_folder, swap_in
from ..errors import BundleError, ImgClassError
from ..vocabulary import KINDS, check_kind
from .formats import FORMAT_FILES, CheckSet, agreement_table, check_formats, open_runtime

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "BundleModel",
    "export_bundle",
    "load_model",
    "read_metadata",
]

BUNDLE_FORMAT = "jupyter_imgclass.bundle"
BUNDLE_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
METADATA_FILE = "model.json"
TAG_TYPES = ("Regular", "Negative")
README_FILE = "README.md"
ONNX_FILE = "model.onnx"
MAX_METADATA_BYTES = 32 * 1024 * 1024
_REQUIRED_KEYS = ("format", "format_version", "network", "kind", "tags", "preprocessing", "files")
_LIBRARIES = ("jupyter_imgclass", "jax", "flax", "numpy", "safetensors", "onnx", "onnxruntime")


# ---------------------------------------------------------------------------- helpers


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = _metadata.version(name)
        except _metadata.PackageNotFoundError:
            continue
    return out


def _jsonable(value: Any, what: str) -> Any:
    """Plain JSON types (numpy scalars/arrays converted); NaN/inf become ``None``."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, what) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, what) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), what)
    if isinstance(value, np.generic):
        return _jsonable(value.item(), what)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise BundleError(f"{what}: value {value!r} of type {type(value).__name__} is not JSON")


def _normalise_tags(tags: Sequence[Any]) -> list[dict[str, str]]:
    out = []
    for i, tag in enumerate(tags):
        if isinstance(tag, str):
            out.append({"id": str(i), "name": tag})
        elif isinstance(tag, Mapping) and "name" in tag:
            record = {"id": str(tag.get("id", i)), "name": str(tag["name"])}
            if tag.get("type", "Regular") not in TAG_TYPES:
                raise BundleError(
                    f"tags[{i}]: type must be one of {TAG_TYPES}, got {tag['type']!r}"
                )
            if tag.get("type") == "Negative":
                record["type"] = "Negative"
            out.append(record)
        else:
            raise BundleError(
                f"tags[{i}]: expected a name or an {{'id', 'name', 'type'}} dict, got {tag!r}"
            )
    names = [t["name"] for t in out]
    if not names or len(set(names)) != len(names):
        raise BundleError(f"tags must be a non-empty list of unique names, got {names}")
    return out


def _readme(meta: Mapping[str, Any]) -> str:
    pre = meta["preprocessing"]
    version = meta["versions"].get("jupyter_imgclass", "")
    number = meta.get("iteration_number")
    number = "-" if number is None else number
    name = meta.get("published_name") or "<name>"
    digest = meta["files"][WEIGHTS_FILE]["sha256"]
    lines = [
        f"# {meta.get('published_name') or meta['network']}",
        "",
        f"An image classifier exported by jupyter_imgclass {version} from project "
        f"`{meta.get('project_name') or '-'}`, iteration {number}.",
        "",
        f"- network: `{meta['network']}` ({meta['kind']}, {len(meta['tags'])} tags)",
        f"- created: {meta['created']}",
        f"- weights: `{WEIGHTS_FILE}` (safetensors), sha256 `{digest}`",
    ]
    if ONNX_FILE in meta["files"]:
        lines.append(f"- ONNX: `{ONNX_FILE}` (see model.json `onnx` for its input)")
    for format_name, record in (meta.get("formats") or {}).items():
        if format_name != "onnx":
            files = ", ".join(f"`{f}`" for f in record["files"])
            lines.append(f"- {format_name}: {files} (same input and output as the ONNX model)")
    table = agreement_table(meta)
    if table:
        lines += ["", "## Formats: agreement with the native model", "", *table]
    lines += [
        "",
        "## Tags",
        "",
        "| id | tag | precision | recall | AP | images |",
        "|---|---|---|---|---|---|",
    ]
    per_tag = (meta.get("metrics") or {}).get("per_tag") or {}

    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v))

    for tag in meta["tags"]:
        m = per_tag.get(tag["name"], {})
        shown = tag["name"].replace("|", "\\|")  # a "|" would end the table cell
        lines.append(
            f"| {tag['id']} | {shown} | {fmt(m.get('precision'))} | {fmt(m.get('recall'))}"
            f" | {fmt(m.get('average_precision'))} | {fmt(m.get('count'))} |"
        )
    overall = (meta.get("metrics") or {}).get("overall")
    if overall:
        lines += ["", "## Overall (held-out images)", ""]
        lines += [f"- {k}: {fmt(v)}" for k, v in overall.items()]
    lines += [
        "",
        "## Preprocessing",
        "",
        "RGB (transparency on white), made "
        f"{describe_resize(pre.get('input_size'), pre.get('resize', DEFAULT_RESIZE))}, "
        f"`x / 255`, then `(x - mean) / std` with mean {pre.get('mean')} and std {pre.get('std')}, "
        "NHWC layout. The resize is antialiased bilinear (Pillow's `Image.resize` with "
        "`BILINEAR`).",
        "",
        "## Use",
        "",
        "```python",
        "import jupyter_imgclass as ic",
        "",
        'model = ic.load_model("path/to/this/folder")',
        'model.predict(["image.jpg"])  # [[Prediction(tag, probability), ...]]',
        "```",
        "",
        "Serve it: `jupyter-imgclass serve path/to/this/folder --port 8000`, then",
        f"`POST /classify/iterations/{name}/image` with the image bytes.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- export


def export_bundle(
    directory: str | os.PathLike[str],
    *,
    model_name: str,
    tags: Sequence[Mapping[str, Any] | str],
    kind: str,
    weights: Mapping[str, Any],
    preprocessing: Mapping[str, Any],
    thresholds: float | Mapping[str, float] | None = None,
    metrics: Mapping[str, Any] | None = None,
    published_name: str | None = None,
    project_name: str | None = None,
    project_id: str | None = None,
    iteration_number: int | None = None,
    head_input: str = "raw",
    onnx: bool = False,
    formats: Sequence[str] = (),
    check: CheckSet | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes a bundle folder that :func:`load_model` can read anywhere.

    Args:
        directory: target folder; created if missing. It must be empty or hold a
            previous bundle (which is replaced).
        model_name: registered network name (``models.names()``).
        tags: ``[{"id", "name"}, ...]`` in the order of the model's outputs (plain names
            get their index as id).
        kind: ``"multiclass"`` or ``"multilabel"``.
        weights: flat ``{name: numpy array}`` as produced by ``train.fit``.
        preprocessing: ``ModelSpec.to_json()`` of the network.
        thresholds: probability threshold (one number or ``{tag: threshold}``).
        metrics: validation metrics (``evaluate.compute_metrics``), recorded as they are.
        published_name: the name the REST route answers to
            (``/classify/iterations/<published_name>/image``).
        project_name: the project the model came from (informative).
        project_id: the project's UUID; the hosted-API routes of the service answer to it
            (``/customvision/v3.0/Prediction/<project_id>/...``).
        iteration_number: the iteration the model came from (informative).
        head_input: what the network's head sees (``"raw"`` or ``"l2"``); part of the
            architecture, so it is recorded and used by every loader.
        onnx: also write ``model.onnx`` (see :mod:`jupyter_imgclass.publish.onnx`); the
            same as ``"onnx"`` in ``formats``.
        formats: model formats to write beside the weights, from
            :data:`~.formats.FORMATS` (``"onnx"``, ``"onnx-int8"``, ``"openvino"``); the
            latter two are made from the float ONNX model, which is written too.
        check: the project's images each format is run on against the native model
            (and int8 calibrated on); needed for ``"onnx-int8"`` and ``"openvino"``. The
            agreement table goes into ``model.json`` (``formats``, ``check``,
            ``native``) and the README.
        overwrite: replace a bundle already in ``directory`` (refused otherwise).

    Returns:
        The bundle folder.

    Raises:
        BundleError: for a non-empty folder that is not a bundle, a bundle there without
            ``overwrite``, bad tags, an unknown kind, weights that are not arrays,
            metadata that is not JSON, an unknown format, ``"openvino"`` without the
            openvino package, or a derived format without ``check`` images.
    """

    path = Path(directory)
    check_kind(kind, error=BundleError)
    formats = check_formats([*formats, *(["onnx"] if onnx else [])])
    if formats:
        formats = check_formats(["onnx", *formats])  # int8 and IR are made from it
    if path.exists() and not path.is_dir():
        raise BundleError(f"{path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not _bundle_or_remains(path, overwrite):
        raise BundleError(
            f"{path}: folder is not empty and holds no {METADATA_FILE}; "
            "export into a new or empty folder"
        )
    if (path / METADATA_FILE).exists() and not overwrite:
        raise BundleError(
            f"{path}: holds a model bundle already; pass overwrite=True (CLI: --overwrite) "
            "to replace it, or export into a new folder"
        )
    tag_records = _normalise_tags(tags)
    tensors: dict[str, np.ndarray] = {}
    for key, value in weights.items():
        array = np.asarray(value)
        if array.dtype == object or not isinstance(key, str):
            raise BundleError(f"{path}: weight {key!r} is not a numeric array")
        tensors[key] = np.ascontiguousarray(array)
    if not tensors:
        raise BundleError(f"{path}: no weights to export")
    if isinstance(thresholds, Mapping):
        thr: Any = {str(k): float(v) for k, v in thresholds.items()}
    else:
        thr = None if thresholds is None else float(thresholds)

    # Everything is written into a staging folder beside ``path`` and swapped in whole:
    # an interrupted export (or overwrite) leaves the old bundle as it was.
    final, path = path, staging_folder(path)
    try:
        _write_bundle(
            path,
            tensors,
            tag_records,
            thr,
            model_name=model_name,
            kind=kind,
            preprocessing=preprocessing,
            metrics=metrics,
            published_name=published_name,
            project_name=project_name,
            project_id=project_id,
            iteration_number=iteration_number,
            formats=formats,
            check=check,
            head_input=head_input,
        )
        swap_in(path, final)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return final


def _write_bundle(
    path: Path,
    tensors: dict[str, np.ndarray],
    tag_records: list[dict],
    thr: Any,
    *,
    model_name: str,
    kind: str,
    preprocessing: Mapping[str, Any],
    metrics: Mapping[str, Any] | None,
    published_name: str | None,
    project_name: str | None,
    project_id: str | None,
    iteration_number: int | None,
    formats: tuple[str, ...],
    check: CheckSet | None,
    head_input: str,
) -> None:
    """Writes a whole bundle into the (staging) folder ``path``."""
    from safetensors.numpy import save

    blob = save(tensors, metadata={"format": BUNDLE_FORMAT, "network": model_name})
    atomic_write(path / WEIGHTS_FILE, blob)
    files = {
        WEIGHTS_FILE: {
            "sha256": hashlib.sha256(blob).hexdigest(),
            "bytes": len(blob),
            "tensors": len(tensors),
        }
    }
    meta: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "network": model_name,
        "head_input": head_input,
        "kind": kind,
        "tags": tag_records,
        "preprocessing": _jsonable(dict(preprocessing), "preprocessing"),
        "thresholds": thr,
        "metrics": _jsonable(dict(metrics or {}), "metrics"),
        "published_name": published_name,
        "project_name": project_name,
        "project_id": project_id,
        "iteration_number": iteration_number,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "files": files,
    }
    onnx_path = path / ONNX_FILE
    if formats:
        from .onnx import export_onnx

        info = export_onnx(
            onnx_path,
            model_name=model_name,
            num_classes=len(tag_records),
            kind=kind,
            weights=tensors,
            preprocessing=meta["preprocessing"],
            head_input=head_input,
            metadata={
                "tags": json.dumps([t["name"] for t in tag_records]),
                "thresholds": json.dumps(thr),
                "kind": kind,
                "resize": str(meta["preprocessing"].get("resize", DEFAULT_RESIZE)),
            },
        )
        meta["onnx"] = info
        meta.update(
            _write_formats(
                path, formats, check, model_name, kind, tag_records, tensors, meta, head_input
            )
        )
        for name in meta["formats"]:
            for file in FORMAT_FILES[name]:
                files[file] = {
                    "sha256": _sha256(path / file),
                    "bytes": (path / file).stat().st_size,
                }
    atomic_write(path / README_FILE, _readme(meta).encode("utf-8"))
    atomic_write(path / METADATA_FILE, json.dumps(meta, indent=2).encode("utf-8"))
    fsync_folder(path)


def _write_formats(path, formats, check, model_name, kind, tag_records, tensors, meta, head_input):
    """Writes the formats other than ONNX and checks every one against the native model
    (a :class:`~jupyter_imgclass.predict.Predictor` over the same weights)."""
    from ..predict import Predictor
    from .formats import write_formats

    pre = meta["preprocessing"]
    native = Predictor(
        model_name,
        [t["name"] for t in tag_records],
        kind,
        tensors,
        input_size=pre.get("input_size"),
        head_input=head_input,
        resize=pre.get("resize", DEFAULT_RESIZE),
    )
    return _jsonable(
        write_formats(path, formats, kind=kind, native=native.predict_arrays, check=check),
        "formats",
    )


BUNDLE_FILES = frozenset(
    {WEIGHTS_FILE, METADATA_FILE, README_FILE, *(f for fs in FORMAT_FILES.values() for f in fs)}
)


def _bundle_or_remains(path: Path, overwrite: bool) -> bool:
    """Whether ``path`` holds a bundle, or (for an overwrite) only what an interrupted
    export of one could have left there."""
    if (path / METADATA_FILE).exists():
        return True
    names = os.listdir(path)
    return overwrite and all(n in BUNDLE_FILES or n.startswith(TMP_PREFIX) for n in names)


# ---------------------------------------------------------------------------- load


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads and validates ``model.json`` of a bundle (without touching the weights).

    Raises:
        BundleError: missing folder or file, bad JSON, wrong format, missing keys,
            unknown network, bad tags.
    """
    path = Path(directory)
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle folder")
    meta_path = path / METADATA_FILE
    if not meta_path.is_file():
        raise BundleError(f"{path}: not a model bundle ({METADATA_FILE} is missing)")
    if meta_path.stat().st_size > MAX_METADATA_BYTES:
        raise BundleError(f"{meta_path}: larger than {MAX_METADATA_BYTES} bytes; not a bundle")
    try:
        meta = json.loads(meta_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{meta_path}: expected a JSON object")
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if missing:
        raise BundleError(f"{meta_path}: missing keys {missing}")
    if meta["format"] != BUNDLE_FORMAT:
        raise BundleError(f"{meta_path}: format {meta['format']!r} is not {BUNDLE_FORMAT!r}")
    if not isinstance(meta["format_version"], int) or meta["format_version"] > BUNDLE_VERSION:
        raise BundleError(
            f"{meta_path}: bundle format version {meta['format_version']!r} is newer than this "
            f"jupyter_imgclass reads ({BUNDLE_VERSION}); upgrade jupyter_imgclass"
        )
    if meta["kind"] not in KINDS:
        raise BundleError(f"{meta_path}: unknown kind {meta['kind']!r}")
    from .. import models

    if not isinstance(meta["network"], str) or meta["network"] not in models.names():
        raise BundleError(
            f"{meta_path}: unknown network {meta['network']!r}; this jupyter_imgclass knows "
            f"{', '.join(models.names())}"
        )
    try:
        meta["tags"] = _normalise_tags(meta["tags"])
    except (BundleError, TypeError) as exc:
        raise BundleError(f"{meta_path}: bad tags: {exc}") from None
    files = meta["files"]
    if not isinstance(files, dict) or not isinstance(files.get(WEIGHTS_FILE), dict):
        raise BundleError(f"{meta_path}: 'files' does not describe {WEIGHTS_FILE}")
    if not isinstance(meta["preprocessing"], dict):
        raise BundleError(f"{meta_path}: 'preprocessing' must be an object")
    return meta


def _verify_file(path: Path, record: Mapping[str, Any]) -> None:
    if not path.is_file():
        raise BundleError(f"{path}: missing from the bundle")
    expected = record.get("sha256")
    if not isinstance(expected, str) or not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise BundleError(f"{path}: model.json records no valid sha256 for it")
    if "bytes" in record and path.stat().st_size != record["bytes"]:
        raise BundleError(
            f"{path}: {path.stat().st_size} bytes but model.json says {record['bytes']} "
            "(truncated or replaced)"
        )
    if _sha256(path) != expected:
        raise BundleError(f"{path}: sha256 does not match model.json (the file was modified)")


class BundleModel:
    """A loaded bundle: a predictor plus the metadata it was exported with.

    Attributes:
        path: the bundle folder.
        metadata: the parsed ``model.json``.
        predictor: the underlying ``predict.Predictor``.
        tags: tag names in output order; ``tag_ids`` the matching ids.
        kind, model_name, published_name, project_name, project_id, iteration_number,
        thresholds.

    ``predict(items)`` and ``predict_arrays(uint8_batch)`` behave as on ``Predictor``.
    """

    def __init__(self, path: Path, metadata: dict[str, Any], predictor: Any):
        self.path = path
        self.metadata = metadata
        self.predictor = predictor
        self.tags: list[str] = [t["name"] for t in metadata["tags"]]
        self.tag_ids: list[str] = [t["id"] for t in metadata["tags"]]
        self.tag_types: list[str] = [t.get("type", "Regular") for t in metadata["tags"]]
        self.kind: str = metadata["kind"]
        self.model_name: str = metadata["network"]
        self.published_name: str | None = metadata.get("published_name")
        self.project_name: str | None = metadata.get("project_name")
        self.project_id: str | None = metadata.get("project_id")
        self.iteration_number: int | None = metadata.get("iteration_number")
        self.thresholds = metadata.get("thresholds")
        self.input_size: int = int(metadata["preprocessing"]["input_size"])
        self.resize: str = predictor.resize

    def predict_arrays(self, images: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        """Probabilities ``[N, T]`` for a uint8 ``[N, H, W, 3]`` batch (see ``Predictor``)."""
        return self.predictor.predict_arrays(images, *args, **kwargs)

    def predict(self, items: Any, *args: Any, **kwargs: Any) -> Any:
        """Sorted ``Prediction`` lists, as ``Iteration.predict``: one list for one image
        (path, bytes, PIL image, array), one list per image for a list of them."""
        single = not isinstance(items, list | tuple)
        results = self.predictor.predict([items] if single else list(items), *args, **kwargs)
        return results[0] if single else results

    @property
    def formats(self) -> list[str]:
        """The model formats the bundle carries beside its weights (``"onnx"``, ...)."""
        return list(self.metadata.get("formats") or (["onnx"] if "onnx" in self.metadata else []))

    def runtime(self, format: str) -> Any:
        """Format ``format`` of this bundle loaded in its runtime (onnxruntime or
        OpenVINO): a :class:`~.formats.FormatRuntime` with ``predict_arrays``. Its files
        were verified when the bundle loaded.

        Raises:
            BundleError: an unknown format, or one the bundle was exported without.
        """
        check_formats([format])
        if format not in self.formats:
            raise BundleError(
                f"{self.path}: exported without format {format!r} (it has "
                f"{', '.join(self.formats) or 'none'})"
            )
        return open_runtime(format, self.path)

    def __getattr__(self, name: str) -> Any:
        # Anything else Predictor offers (batch sizes, preprocessing helpers) passes through.
        if name == "predictor":
            raise AttributeError(name)
        return getattr(self.predictor, name)

    def __repr__(self) -> str:
        return (
            f"BundleModel({self.published_name or self.model_name!r}, network={self.model_name!r}, "
            f"kind={self.kind!r}, tags={self.tags!r})"
        )


def load_model(directory: str | os.PathLike[str]) -> BundleModel:
    """Loads a bundle written by :func:`export_bundle`, verifying it first.

    Checks, in order: ``model.json`` parses and has every key, the network is known to
    this package, the weights file has the recorded size and sha256, the tensors parse,
    the preprocessing matches the registered network, and the weights fit the network.

    Args:
        directory: the bundle folder.

    Returns:
        A :class:`BundleModel`.

    Raises:
        BundleError: with the file and the reason, for any missing, truncated, tampered
            or unknown bundle.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    from .. import models

    path = Path(directory)
    meta = read_metadata(path)
    weights_path = path / WEIGHTS_FILE
    for name, record in meta["files"].items():
        # Every listed file: the weights, ONNX, int8 ONNX, OpenVINO IR.
        if not isinstance(record, dict) or Path(name).name != name or name in ("", ".", ".."):
            raise BundleError(f"{path / METADATA_FILE}: 'files' lists {name!r}, not a bundle file")
        _verify_file(path / name, record)
    try:
        weights = load(weights_path.read_bytes())
    except (SafetensorError, ValueError, OSError) as exc:
        raise BundleError(f"{weights_path}: not a readable safetensors file ({exc})") from None
    spec = models.get(meta["network"])
    pre = meta["preprocessing"]
    expected = spec.to_json()
    for key in ("mean", "std"):
        if key not in pre:
            raise BundleError(f"{path / METADATA_FILE}: preprocessing lacks {key!r}")
        got, want = pre[key], expected[key]
        if np.shape(got) != np.shape(want) or not np.allclose(
            np.asarray(got, dtype=float), np.asarray(want, dtype=float)
        ):
            raise BundleError(
                f"{path / METADATA_FILE}: preprocessing {key}={got!r} does not match network "
                f"{spec.name!r} of this jupyter_imgclass ({want!r})"
            )
    from ..models.layers import HEAD_INPUTS

    head_input = meta.get("head_input", "raw")  # bundles before it was recorded: raw
    if head_input not in HEAD_INPUTS:
        raise BundleError(f"{path / METADATA_FILE}: unknown head_input {head_input!r}")
    input_size = pre.get("input_size", spec.input_size)
    if not isinstance(input_size, int) or not 8 <= input_size <= 4096:
        raise BundleError(f"{path / METADATA_FILE}: bad preprocessing input_size {input_size!r}")
    resize = pre.get("resize", DEFAULT_RESIZE)  # bundles from before the modes: squashed
    if resize not in RESIZE_MODES:
        raise BundleError(
            f"{path / METADATA_FILE}: preprocessing resize {resize!r} is not one of "
            f"{', '.join(RESIZE_MODES)}"
        )
    from ..predict import Predictor

    tags = [t["name"] for t in meta["tags"]]
    thresholds = meta.get("thresholds")
    if isinstance(thresholds, (int, float)) and not isinstance(thresholds, bool):
        thresholds = {tag: float(thresholds) for tag in tags}
    elif not isinstance(thresholds, dict):
        thresholds = None
    try:
        predictor = Predictor(
            meta["network"],
            tags,
            meta["kind"],
            weights,
            thresholds=thresholds,
            input_size=input_size,
            head_input=head_input,
            resize=resize,
        )
    except ImgClassError as exc:
        raise BundleError(
            f"{weights_path}: weights do not fit network {spec.name!r}: {exc}"
        ) from exc
    except (KeyError, ValueError, TypeError) as exc:
        raise BundleError(
            f"{weights_path}: weights do not fit network {spec.name!r} with {len(tags)} tags "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return BundleModel(path, meta, predictor)
