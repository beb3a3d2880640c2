"""Squash, pad or crop: how an image becomes the square the network sees (issue 35, item 0).

Before the resize mode was chosen for the product, this measured it on frozen features,
with the quick budget's kind of head: for each set (``photos``, ``drawn``; Fashion-MNIST
is square, so every mode gives it the same pixels), backbone (EfficientNet-Lite0, -Lite2),
size (5 / 10 / 20 labelled images per tag) and seed, scikit-learn's
``LogisticRegressionCV`` on L2-normalised features (``few_shot_levers.py``'s ``a base``:
C by cross-validated log-loss over the labelled images only) is fitted on features of the
images resized each way (:func:`jupyter_imgclass.data.images.resize_square`), and its TEST
accuracy printed:

- ``squash``: stretched to the square (what every model before this change was trained on);
- ``pad``: the longer side scaled to the square, the rest white (the background that
  transparency is composited on);
- ``crop``: the shorter side scaled to the square, the centre kept.
- ``CV-chosen``: per split, whichever of squash / pad / crop has the lowest
  cross-validated log-loss on the labelled images (what a ``resize="choose"`` would do;
  the test images never enter the choice).
- ``pad-border`` (``--border``, a candidate only): ``pad``, but filled with the median
  colour of the image's outermost pixels instead of white (a drawing on a coloured
  background keeps its background; transparency is white there already).

The splits are ``bench_transfer.py``'s (``--pool rest``: the same train / pool / test images
per seed). ``photos`` is the set a default may be chosen on; ``drawn`` is reported.
Features are cached in ``--cache`` (default ``/tmp/few_shot_levers``, shared with
``few_shot_levers.py``, whose squash features are the same).

Usage::

    .venv/bin/python benchmarks/resize_modes.py
    .venv/bin/python benchmarks/resize_modes.py --datasets drawn --sizes 10 --seeds 1
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import few_shot_levers as levers  # noqa: E402

import jupyter_imgclass as ic  # noqa: E402
from jupyter_imgclass.data.images import RESIZE_MODES  # noqa: E402

_load_rgb = levers.load_rgb


def border_colour(arr: np.ndarray) -> tuple[int, int, int]:
    """The median colour of an image's outermost ring of pixels."""
    ring = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    return tuple(int(v) for v in np.median(ring, axis=0))


def load_with_border(item, size, *, resize="squash"):
    """``load_rgb``, plus the ``pad-border`` candidate."""
    if resize != "pad-border":
        return _load_rgb(item, size, resize=resize)
    from PIL import Image

    full = _load_rgb(item, None)
    padded = _load_rgb(full, size, resize="pad")
    h, w = full.shape[:2]
    scale = size / max(w, h)
    iw, ih = max(1, min(size, round(w * scale))), max(1, min(size, round(h * scale)))
    out = np.empty((size, size, 3), np.uint8)
    out[:] = border_colour(full)
    x, y = (size - iw) // 2, (size - ih) // 2
    inner = np.asarray(Image.fromarray(full).resize((iw, ih), Image.Resampling.BILINEAR,
                                                   reducing_gap=3.0))  # fmt: skip
    out[y : y + ih, x : x + iw] = inner
    if iw == size and ih == size:
        return padded
    return out


levers.load_rgb = load_with_border


def accuracy(feats: levers.Features, data, k: int, tags: list[str]) -> tuple[float, float]:
    """Test accuracy of ``a base`` (L2 + LogisticRegressionCV by log-loss) on one split,
    and its cross-validated log-loss over the labelled images (at the chosen C)."""
    train, _, test = data
    f_tr, _ = feats.get([item for item, _ in train])
    f_te, _ = feats.get([item for item, _ in test])
    y_tr = np.array([tags.index(t) for _, t in train])
    y_te = np.array([tags.index(t) for _, t in test])
    lr = levers.fit(levers.l2(f_tr), y_tr, k)
    cv_loss = -float(lr.scores_[lr.classes_[0]].mean(axis=0).max())
    return float((lr.predict_proba(levers.l2(f_te)).argmax(1) == y_te).mean()), cv_loss


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["photos", "drawn"])
    parser.add_argument(
        "--backbones", nargs="+", default=["efficientnet_lite0", "efficientnet_lite2"]
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[5, 10, 20])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/few_shot_levers"))
    parser.add_argument("--border", action="store_true", help="also measure pad-border")
    args = parser.parse_args(argv)
    modes = [*RESIZE_MODES, *(["pad-border"] if args.border else [])]
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    from jupyter_imgclass import models

    print(f"jupyter_imgclass {ic.__version__}; test accuracy of L2 + LogisticRegressionCV")
    means: dict[tuple[str, str], list[float]] = {}
    for dataset in args.datasets:
        splits = levers.splits_of(dataset, args.cache, args.sizes, args.seeds)
        tags = sorted({t for _, t in next(iter(splits.values()))[0]})
        for name in args.backbones:
            spec = models.get(name)
            table = {}
            for mode in modes:
                feats = levers.Features(args.cache, dataset, spec, resize=mode)
                started = time.perf_counter()
                feats.ensure([item for split in splits.values() for part in split
                              for item, _ in part])  # fmt: skip
                took = time.perf_counter() - started
                if took > 1:
                    print(f"  {dataset} {name} {mode}: features in {took:.0f} s", flush=True)
                table[mode] = {
                    k: [accuracy(feats, splits[(k, s)], k, tags) for s in range(args.seeds)]
                    for k in args.sizes
                }
            print(f"\n{dataset}, {name} (mean of {args.seeds} seeds; vs squash in points)")
            for k in args.sizes:
                table.setdefault("CV-chosen", {})[k] = [
                    min((table[m][k][s] for m in RESIZE_MODES), key=lambda r: r[1])
                    for s in range(args.seeds)
                ]
            shown = [*modes, "CV-chosen"]
            print(f"{'k':>4}" + "".join(f"{m:>18}" for m in shown))
            for k in args.sizes:
                cells = []
                for mode in shown:
                    mean = float(np.mean([r[0] for r in table[mode][k]]))
                    delta = 100 * (mean - float(np.mean([r[0] for r in table["squash"][k]])))
                    cells.append(f"{mean:>10.3f} ({delta:+5.1f})")
                    means.setdefault((dataset, mode), []).append(delta)
                print(f"{k:>4}" + "".join(f"{c:>18}" for c in cells))
    print("\nmean difference to squash over backbones and sizes (points)")
    for (dataset, mode), deltas in sorted(means.items()):
        if mode != "squash":
            print(f"  {dataset:8} {mode:10} {np.mean(deltas):+5.1f}  (min {min(deltas):+5.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
