"""More export formats beside the float ONNX model, each checked against the native model.

Formats (:data:`FORMATS`), all made from the bundle's float ``model.onnx`` and written
beside it:

* ``onnx`` -- the float32 ONNX model (:mod:`.onnx`), ``model.onnx``;
* ``onnx-int8`` -- the same network quantized to 8 bits by onnxruntime's static
  quantization, ``model.int8.onnx``: batch norms folded into the convolutions first, the
  activations calibrated on the project's own images, weights per channel (QDQ format,
  int8 weights, uint8 activations); same input and output as ``model.onnx``;
* ``openvino`` -- OpenVINO IR (``model.xml`` + ``model.bin``), converted from the float
  ONNX by ``openvino.convert_model`` with its weights stored as FP16 (``save_model``'s
  ``compress_to_fp16``); the CPU plugin computes in its default precision.

After writing, every format is run on a bounded, seeded sample of the project's own
images (:class:`CheckSet`) -- onnxruntime for ONNX, OpenVINO's runtime for the IR -- and
compared with the native (JAX) model: top-1 agreement, the largest probability
difference, accuracy on the tagged images beside the native accuracy, size, and
milliseconds per image at batch 1 and 32. A format whose top-1 agreement is below
:data:`AGREEMENT_FLOOR` is still written, but flagged in ``model.json``, the bundle's
README and a warning. A format that cannot be run here (OpenVINO not installed, no images
to check it on) is refused before anything is written: no format goes out unverified.

Examples:
    >>> check_formats(["openvino", "onnx", "onnx"])  # doctest: +SKIP
    ('onnx', 'openvino')
    >>> check_formats(["tflite"])
    Traceback (most recent call last):
    ...
    jupyter_imgclass.errors.BundleError: export format 'tflite': choose 'onnx', 'onnx-int8' \
or 'openvino'
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError
from ..vocabulary import MODEL_FORMATS

__all__ = [
    "AGREEMENT_FLOOR",
    "FORMATS",
    "FORMAT_FILES",
    "CheckSet",
    "FormatRuntime",
    "agreement_table",
    "check_formats",
    "open_runtime",
    "timed_predictions",
    "write_formats",
]

FORMATS = MODEL_FORMATS
"""Model formats a bundle can carry beside the safetensors weights."""

FORMAT_FILES = {
    "onnx": ("model.onnx",),
    "onnx-int8": ("model.int8.onnx",),
    "openvino": ("model.xml", "model.bin"),
}
"""The files each format writes into the bundle folder."""

AGREEMENT_FLOOR = 0.95
"""Below this top-1 agreement with the native model a format is flagged (not refused)."""

CHECK_IMAGES = 200
"""Most images a format is checked on (a seeded sample of the project's images)."""

CALIBRATION_IMAGES = 100
"""Most images the int8 activations are calibrated on (others than the checked ones when
the project has enough)."""

TIMING_IMAGES = 16
"""Images run one at a time for the batch-1 timing."""

TIMING_BATCHES = 3
"""Batches of 32 timed (after a first, untimed pass over every image)."""

OPENVINO_INSTALL = "pip install 'jupyter_imgclass[openvino]' (or: pip install openvino)"


class FormatWarning(UserWarning):
    """A format's agreement with the native model is below :data:`AGREEMENT_FLOOR`."""


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """The requested formats in :data:`FORMATS` order, each once, after checking that
    each is known and can be made and run here.

    Raises:
        BundleError: an unknown name (naming it and the choices), or ``openvino`` without
            the ``openvino`` package (saying what to install).
    """
    names = list(formats)
    for name in names:
        if name not in FORMATS:
            options = ", ".join(repr(f) for f in FORMATS[:-1]) + f" or {FORMATS[-1]!r}"
            raise BundleError(f"export format {name!r}: choose {options}")
    if "openvino" in names:
        try:
            import_openvino()
        except ImportError as exc:
            raise BundleError(
                f"export format 'openvino' needs the openvino package, which is not "
                f"installed here ({exc}); {OPENVINO_INSTALL}"
            ) from None
    return tuple(f for f in FORMATS if f in names)


def import_openvino() -> Any:
    """``import openvino``, without its usage telemetry.

    Importing openvino (and each ``convert_model``) sends an event to Google Analytics
    from a forked process unless the user opted out (``opt_in_out --opt_out``); this tool
    sends nothing anywhere, and a fork in a process running JAX's threads can deadlock.
    OpenVINO's own tools fall back to their stub when ``openvino_telemetry`` cannot be
    imported, so it is hidden for the first import only (nothing else is changed; a
    process that imported openvino before keeps the user's own setting).
    """
    if "openvino" in sys.modules and sys.modules["openvino"] is not None:
        return sys.modules["openvino"]
    hidden = "openvino_telemetry"
    had, saved = hidden in sys.modules, sys.modules.get(hidden)
    sys.modules[hidden] = None  # type: ignore[assignment]
    try:
        return importlib.import_module("openvino")
    finally:
        if had:
            sys.modules[hidden] = saved  # type: ignore[assignment]
        else:
            del sys.modules[hidden]


# ---------------------------------------------------------------------------- check set


@dataclass
class CheckSet:
    """The project's own images a format is checked (and int8 calibrated) on.

    Attributes:
        images: uint8 ``[N, S, S, 3]`` at the network's input size, already made square.
        labels: per image, the class index (multiclass) or a 0/1 row (multilabel); -1
            (a -1 row) for an untagged image. None when nothing is tagged.
        calibration: uint8 images for the int8 activation ranges; None: ``images``.
        thresholds: per-tag thresholds (multilabel accuracy), in output order.
        description: how the images were chosen, for ``model.json`` and the README.
    """

    images: np.ndarray
    labels: np.ndarray | None = None
    calibration: np.ndarray | None = None
    thresholds: np.ndarray | None = None
    description: str = ""


def _accuracy(probs: np.ndarray, check: CheckSet, kind: str) -> float | None:
    if check.labels is None:
        return None
    labels = np.asarray(check.labels)
    if kind == "multilabel":
        rows = (labels >= 0).all(axis=1)
        if not rows.any():
            return None
        thr = 0.5 if check.thresholds is None else np.asarray(check.thresholds)
        return float(((probs[rows] >= thr) == (labels[rows] > 0.5)).mean())
    rows = labels >= 0
    if not rows.any():
        return None
    return float((probs[rows].argmax(1) == labels[rows]).mean())


def timed_predictions(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray):
    """``(probabilities, ms per image at batch 32, ms per image at batch 1)``: the
    probabilities from a first pass (which also compiles and allocates for every batch
    shape), then the timings on up to :data:`TIMING_BATCHES` full batches of 32 and
    :data:`TIMING_IMAGES` single images."""
    probs = np.concatenate([predict(images[k : k + 32]) for k in range(0, len(images), 32)])
    batches = [images[k : k + 32] for k in range(0, len(images) - 31, 32)][:TIMING_BATCHES]
    batches = batches or [images]
    start = time.perf_counter()
    for batch in batches:
        predict(batch)
    ms32 = (time.perf_counter() - start) * 1000 / sum(len(b) for b in batches)
    single = images[:TIMING_IMAGES]
    predict(single[:1])
    start = time.perf_counter()
    for k in range(len(single)):
        predict(single[k : k + 1])
    ms1 = (time.perf_counter() - start) * 1000 / len(single)
    return probs.astype(np.float32), ms32, ms1


def _measure(name, predict, check, kind, native, sizes) -> tuple[dict[str, Any], np.ndarray]:
    """A format's row of the agreement table (``native``: the native probabilities;
    None for the native row itself), and its probabilities."""
    probs, ms32, ms1 = timed_predictions(predict, check.images)
    record: dict[str, Any] = {
        "images": len(check.images),
        "ms_per_image_batch1": round(ms1, 3),
        "ms_per_image_batch32": round(ms32, 3),
        "accuracy": _accuracy(probs, check, kind),
    }
    if native is not None:
        record["top1_agreement"] = float((probs.argmax(1) == native.argmax(1)).mean())
        record["max_probability_difference"] = float(np.abs(probs - native).max())
        record["mean_probability_difference"] = float(np.abs(probs - native).mean())
    if sizes is not None:
        record["bytes"] = sizes[name]
        record["percent_of_float_onnx"] = round(100.0 * sizes[name] / sizes["onnx"], 1)
    return record, probs


# ---------------------------------------------------------------------------- runtimes


class FormatRuntime:
    """One exported format, loaded in its own runtime: ``predict_arrays(uint8 [N,S,S,3])``
    returns probabilities ``[N, T]`` as the native model does.

    Attributes:
        name: the format (one of :data:`FORMATS`).
        path: the model file it runs.
    """

    def __init__(self, name: str, path: Path, run: Callable[[np.ndarray], np.ndarray]):
        self.name = name
        self.path = path
        self._run = run

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, T]`` for uint8 images already at the input size."""
        x = np.ascontiguousarray(np.asarray(images), dtype=np.float32)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"images: need [N, S, S, 3], got shape {x.shape}")
        return np.asarray(self._run(x), np.float32)

    def __repr__(self) -> str:
        return f"FormatRuntime({self.name!r}, {self.path.name!r})"


def open_runtime(name: str, folder: str | os.PathLike[str]) -> FormatRuntime:
    """Loads format ``name`` of the bundle folder in its runtime (onnxruntime or
    OpenVINO on the CPU). It does not verify the files: :func:`bundle.load_model` does.

    Raises:
        BundleError: an unknown format, a missing file, or OpenVINO not installed.
    """
    check_formats([name])
    path = Path(folder) / FORMAT_FILES[name][0]
    if not path.is_file():
        raise BundleError(f"{path}: missing; the bundle was exported without {name!r}")
    if name == "openvino":
        ov = import_openvino()
        compiled = ov.Core().compile_model(str(path), "CPU")
        request = compiled.create_infer_request()

        def run_ir(x: np.ndarray) -> np.ndarray:
            return request.infer({0: x})[compiled.output(0)].copy()

        return FormatRuntime(name, path, run_ir)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's warnings about unused initializers
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run_onnx(x: np.ndarray) -> np.ndarray:
        return session.run(["probabilities"], {"image": x})[0]

    return FormatRuntime(name, path, run_onnx)


# ---------------------------------------------------------------------------- int8


def fold_batch_norms(model: Any) -> int:
    """Folds each constant per-channel ``Add``/``Sub``/``Mul``/``Div`` that follows a
    ``Conv`` (the exported batch norms) into the convolution's weights and bias, in
    place; also turns ``Min(6, Max(0, x))`` into ``Clip(x, 0, 6)``. The quantizer then
    sees Conv -> Clip, which it quantizes as one step. Returns the number of folds.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    outputs = {o.name for o in graph.output}

    def users(name: str) -> list[Any]:
        return [n for n in graph.node if name in n.input]

    def per_channel(value: np.ndarray, channels: int) -> np.ndarray | None:
        if value.size == 1:
            return np.full(channels, float(value.reshape(())), np.float32)
        if value.size == channels and value.shape[-3:] == (channels, 1, 1):
            return value.reshape(channels).astype(np.float32)
        return None

    folds = 0
    changed = True
    while changed:
        changed = False
        for conv in graph.node:
            if conv.op_type != "Conv" or conv.input[1] not in consts:
                continue
            after = users(conv.output[0])
            if conv.output[0] in outputs or len(after) != 1:
                continue
            step = after[0]
            if step.op_type not in ("Add", "Sub", "Mul", "Div") or step.input[0] != conv.output[0]:
                continue
            weight = consts[conv.input[1]].astype(np.float32)
            value = consts.get(step.input[1])
            c = None if value is None else per_channel(value, weight.shape[0])
            if c is None:
                continue
            bias = (
                consts[conv.input[2]].astype(np.float32)
                if len(conv.input) > 2
                else np.zeros(weight.shape[0], np.float32)
            )
            if step.op_type == "Add":
                bias = bias + c
            elif step.op_type == "Sub":
                bias = bias - c
            else:
                factor = c if step.op_type == "Mul" else 1.0 / c
                weight = weight * factor.reshape(-1, 1, 1, 1)
                bias = bias * factor
            names = (f"{conv.output[0]}_w{folds}", f"{conv.output[0]}_b{folds}")
            for name, array in zip(names, (weight, bias), strict=True):
                consts[name] = array
                graph.initializer.append(numpy_helper.from_array(array, name))
            del conv.input[1:]
            conv.input.extend(names)
            conv.output[0] = step.output[0]
            graph.node.remove(step)
            folds += 1
            changed = True
            break
    folds += _relu6_to_clip(graph, consts, helper, numpy_helper)
    for gemm in graph.node:
        # A [1, N] Gemm bias (the head's Add, fused by onnxruntime) trips the per-channel
        # quantizer of onnxruntime 1.2x; the same numbers as [N] do not.
        bias = consts.get(gemm.input[2]) if gemm.op_type == "Gemm" and len(gemm.input) > 2 else None
        if bias is not None and bias.ndim == 2 and bias.shape[0] == 1:
            name = f"{gemm.input[2]}_flat"
            graph.initializer.append(numpy_helper.from_array(bias.reshape(-1), name))
            gemm.input[2] = name
    used = {i for n in graph.node for i in n.input}
    for t in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(t)
    return folds


def _relu6_to_clip(graph, consts, helper, numpy_helper) -> int:
    def scalar(name: str) -> float | None:
        value = consts.get(name)
        return None if value is None or value.size != 1 else float(value.reshape(()))

    count = 0
    for upper in list(graph.node):
        if upper.op_type != "Min" or len(upper.input) != 2:
            continue
        limit, inner = (
            (upper.input[0], upper.input[1])
            if scalar(upper.input[0]) is not None
            else (upper.input[1], upper.input[0])
        )
        lower = next((n for n in graph.node if inner in n.output), None)
        if lower is None or lower.op_type != "Max" or scalar(limit) is None:
            continue
        if sum(inner in n.input for n in graph.node) != 1:
            continue
        floor, x = (
            (lower.input[0], lower.input[1])
            if scalar(lower.input[0]) is not None
            else (lower.input[1], lower.input[0])
        )
        if scalar(floor) is None:
            continue
        lo, hi = f"{upper.output[0]}_lo", f"{upper.output[0]}_hi"
        for name, v in ((lo, scalar(floor)), (hi, scalar(limit))):
            consts[name] = np.array(v, np.float32)
            graph.initializer.append(numpy_helper.from_array(consts[name], name))
        clip = helper.make_node("Clip", [x, lo, hi], [upper.output[0]])
        index = list(graph.node).index(lower)
        graph.node.remove(lower)
        graph.node.remove(upper)
        graph.node.insert(index, clip)
        count += 1
    return count


class _Calibration:
    """onnxruntime's ``CalibrationDataReader`` over uint8 images, 8 at a time."""

    def __init__(self, images: np.ndarray):
        self._batches = iter([images[k : k + 1].astype(np.float32) for k in range(len(images))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"image": batch}


INT8_SETTINGS = {
    "method": "onnxruntime.quantization.quantize_static",
    "quant_format": "QDQ",
    "per_channel": True,
    "activation_type": "QUInt8",
    "weight_type": "QInt8",
    "calibrate_method": "Percentile",
    "batch_norms_folded": True,
    "float": "first conv",
}
"""How ``model.int8.onnx`` is made (recorded in ``model.json``). Chosen by top-1
agreement on held-out images other than the reported ones
(``benchmarks/export_formats.py``): quantizing the first convolution too, leaving the
depthwise ones in float, dynamic quantization and MinMax calibration all agreed less than
Percentile calibration (0.92 / 0.94 on the digits / Fashion-MNIST selection splits against
0.91 / 0.91 for MinMax), which takes about three times as long. For EfficientNet-Lite0
none reaches the :data:`AGREEMENT_FLOOR` on both sets."""

KEEP_FLOAT = ("none", "first conv", "first conv + depthwise")
"""What ``INT8_SETTINGS["float"]`` may leave unquantized."""


def _float_nodes(model: Any, keep: str) -> list[str]:
    """Names of the nodes ``keep`` (one of :data:`KEEP_FLOAT`) leaves in float."""
    if keep not in KEEP_FLOAT:
        raise BundleError(f"int8 'float' setting {keep!r}: choose one of {KEEP_FLOAT}")
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    chosen = convs[:1] if keep != "none" else []
    if keep == "first conv + depthwise":
        chosen += [n for n in convs[1:] if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    return [n.name for n in chosen]


def write_int8(
    float_onnx: Path, target: Path, calibration: np.ndarray, **settings: Any
) -> dict[str, Any]:
    """Quantizes ``float_onnx`` to ``target`` and returns the settings used.

    Args:
        float_onnx: the bundle's float ``model.onnx``.
        target: the int8 file to write.
        calibration: uint8 ``[N, S, S, 3]`` images the activation ranges come from.
        **settings: overrides of :data:`INT8_SETTINGS` (``calibrate_method``,
            ``float``, ``activation_type``), for measurements.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    chosen = {**INT8_SETTINGS, **settings}
    with tempfile.TemporaryDirectory(prefix="imgclass-int8-") as tmp:
        # onnxruntime's own clean-up first: it cancels the NHWC <-> NCHW transposes around
        # every convolution, so that each Conv meets its batch norm and activation.
        pre, folded = Path(tmp) / "pre.onnx", Path(tmp) / "folded.onnx"
        quant_pre_process(str(float_onnx), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        fold_batch_norms(model)
        for k, node in enumerate(model.graph.node):
            node.name = node.name or f"node_{k}"
        onnx.save(model, str(folded))
        # the calibrators print their progress: onto stderr, so that a CLI's --json
        # stdout stays one JSON object
        with contextlib.redirect_stdout(sys.stderr):
            quantize_static(
                str(folded),
                str(target),
                _Calibration(calibration),
                quant_format=getattr(QuantFormat, chosen["quant_format"]),
                per_channel=chosen["per_channel"],
                activation_type=getattr(QuantType, chosen["activation_type"]),
                weight_type=getattr(QuantType, chosen["weight_type"]),
                calibrate_method=getattr(CalibrationMethod, chosen["calibrate_method"]),
                nodes_to_exclude=_float_nodes(model, chosen["float"]),
            )
    return {**chosen, "calibration_images": len(calibration)}


# ---------------------------------------------------------------------------- OpenVINO


def write_openvino(float_onnx: Path, target: Path) -> dict[str, Any]:
    """Converts ``float_onnx`` to OpenVINO IR ``target`` (``.xml``, with its ``.bin``
    beside it), weights stored as FP16; returns what was done."""
    ov = import_openvino()
    model = ov.convert_model(str(float_onnx))
    ov.save_model(model, str(target), compress_to_fp16=True)
    return {
        "method": "openvino.convert_model + save_model",
        "weights": "FP16 (compress_to_fp16=True)",
        "device": "CPU",
        "openvino": ov.__version__,
    }


# ---------------------------------------------------------------------------- orchestration


def write_formats(
    folder: Path,
    formats: Sequence[str],
    *,
    kind: str,
    native: Callable[[np.ndarray], np.ndarray],
    check: CheckSet | None,
) -> dict[str, Any]:
    """Makes ``formats`` other than ``onnx`` from ``folder/model.onnx``, runs each on the
    check set beside the native model, and returns the ``model.json`` record:
    ``{"check": {...}, "native": {...}, "formats": {name: {"files", "settings",
    "agreement"}}}`` (``check`` None: only the files, for a plain ONNX export without
    images).

    Raises:
        BundleError: a format other than ``onnx`` without images to check it on.
    """
    formats = check_formats(formats)
    derived = [f for f in formats if f != "onnx"]
    if derived and (check is None or not len(check.images)):
        raise BundleError(
            f"export format {derived[0]!r} needs images to check it on (and to calibrate "
            "int8); the project has none that can be read"
        )
    float_onnx = folder / FORMAT_FILES["onnx"][0]
    records: dict[str, dict[str, Any]] = {"onnx": {"settings": {"precision": "float32"}}}
    if "onnx-int8" in formats:
        calibration = check.calibration if check.calibration is not None else check.images
        records["onnx-int8"] = {
            "settings": write_int8(float_onnx, folder / FORMAT_FILES["onnx-int8"][0], calibration)
        }
    if "openvino" in formats:
        records["openvino"] = {
            "settings": write_openvino(float_onnx, folder / FORMAT_FILES["openvino"][0])
        }
    for name, record in records.items():
        record["files"] = list(FORMAT_FILES[name])
    out: dict[str, Any] = {"formats": records}
    if check is None or not len(check.images):
        return out
    sizes = {name: sum((folder / f).stat().st_size for f in FORMAT_FILES[name]) for name in records}
    native_record, native_probs = _measure("native", native, check, kind, None, None)
    out["check"] = {"images": len(check.images), "description": check.description}
    out["native"] = native_record
    for name, record in records.items():
        runtime = open_runtime(name, folder)
        record["agreement"], _ = _measure(
            name, runtime.predict_arrays, check, kind, native_probs, sizes
        )
        agreement = record["agreement"]["top1_agreement"]
        if agreement < AGREEMENT_FLOOR:
            record["flag"] = (
                f"top-1 agreement {agreement:.3f} with the native model is below "
                f"{AGREEMENT_FLOOR}: check this format's predictions before using it"
            )
            warnings.warn(f"{name}: {record['flag']}", FormatWarning, stacklevel=3)
    return out


# ---------------------------------------------------------------------------- the table


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def agreement_table(meta: Mapping[str, Any]) -> list[str]:
    """The agreement table of a bundle's ``model.json`` as Markdown lines (the README
    shows it, the CLI prints it); no lines when the export checked no format.

    Examples:
        ``| onnx-int8 | model.int8.onnx | 0.990 | 0.0412 | 0.950 | 3.80 MB (28%) | ...``
    """
    formats = meta.get("formats") or {}
    native = meta.get("native")
    if not native or not any("agreement" in r for r in formats.values()):
        return []
    check = meta.get("check") or {}
    lines = [
        f"Checked on {check.get('images')} of the project's images"
        + (f" ({check['description']})" if check.get("description") else "")
        + ", against the native (JAX) model:",
        "",
        "| format | files | top-1 agreement | largest prob. diff. | accuracy "
        "| size (% of float ONNX) | ms/image, batch 1 | ms/image, batch 32 |",
        "|---|---|---|---|---|---|---|---|",
        f"| native (JAX) | weights.safetensors | - | - | {_cell(native.get('accuracy'))} | - "
        f"| {_cell(native['ms_per_image_batch1'], 2)} "
        f"| {_cell(native['ms_per_image_batch32'], 2)} |",
    ]
    for name, record in formats.items():
        a = record.get("agreement")
        if not a:
            continue
        mark = " ⚠ below the floor" if record.get("flag") else ""
        size = f"{a['bytes'] / 1e6:.2f} MB ({a['percent_of_float_onnx']:.0f}%)"
        lines.append(
            f"| {name}{mark} | {', '.join(record['files'])} | {_cell(a['top1_agreement'])} "
            f"| {_cell(a['max_probability_difference'], 4)} | {_cell(a.get('accuracy'))} "
            f"| {size} | {_cell(a['ms_per_image_batch1'], 2)} "
            f"| {_cell(a['ms_per_image_batch32'], 2)} |"
        )
    return lines
