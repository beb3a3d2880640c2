"""Few-shot transfer learning through the Project, as a user runs it, against scikit-learn.

For each backbone (EfficientNet-Lite0/1/2), dataset (Fashion-MNIST; real photos from
``photo_set.py``) and size (5 / 10 / 20 training images per tag), over seeds, it prints:

- ``quick``: test accuracy of the iteration ``project.train(budget="quick")`` saves, its
  cross-validated accuracy (what the report shows) and the gap between the two, and the
  seconds the training took (feature extraction included);
- the peer: scikit-learn's ``LogisticRegressionCV`` on the same frozen, L2-normalised
  features the project cached, C chosen by 5-fold CV on the training images only;
- with ``--advanced-minutes``: the ``advanced`` budget's test accuracy at the sizes of
  ``--advanced-sizes``, for the first backbone given, and whether it kept the head.

``--timing`` adds the end-to-end quick training on 500 new Fashion-MNIST images, cold
(features not cached) and cached, with the default backbone.

Nothing here chooses a setting on the test images: they are only scored.

Usage::

    .venv/bin/python benchmarks/bench_transfer.py --datasets fashion photos \\
        --backbones efficientnet_lite0 efficientnet_lite1 efficientnet_lite2 --seeds 2
    .venv/bin/python benchmarks/bench_transfer.py --backbones efficientnet_lite0 \\
        --sizes 20 --advanced-minutes 3 --advanced-sizes 20

The photo set needs ``apt-get install -y --no-install-recommends tuxpaint-stamps-default
gcompris-qt-data`` (``make bench-deps``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import jupyter_imgclass as ic
from jupyter_imgclass.data import datasets
from jupyter_imgclass.data.images import load_rgb
from jupyter_imgclass.models.apply import extract_features, probabilities
from jupyter_imgclass.models.layers import l2_normalise
from jupyter_imgclass.training.logistic import C_GRID

sys.path.insert(0, str(Path(__file__).parent))


def fashion(per_tag: int, seed: int, pool, test):
    sub = pool.subset(per_tag, seed=seed)
    train = [(im, sub.tags[k]) for im, k in zip(sub.images, sub.labels, strict=True)]
    return train, test


def photos(per_tag: int, seed: int, pool, test):
    import photo_set

    train, rest = photo_set.few_shot_split(pool, per_tag, seed)
    return train, rest


def load_pool(name: str, root: Path):
    """``(pool, fixed test set or None, items of every image for feature caching)``."""
    if name == "fashion":
        pool = datasets.fashion_mnist(n_per_class=100, split="train", seed=1)
        test_ds = datasets.fashion_mnist(n_per_class=100, split="test", seed=0)
        test = [(im, test_ds.tags[k]) for im, k in zip(test_ds.images, test_ds.labels, strict=True)]
        return pool, test
    import photo_set

    return photo_set.build(root / "photo_set"), None


class TestFeatures:
    """Frozen features of test images, computed once per backbone."""

    def __init__(self):
        self.cache: dict[tuple[str, int], np.ndarray] = {}
        self.models = {}

    def get(self, spec, items) -> np.ndarray:
        if spec.name not in self.models:
            from flax import nnx

            self.models[spec.name] = spec.create(2, rngs=nnx.Rngs(0))
        out, todo = [None] * len(items), []
        for k, (item, _) in enumerate(items):
            key = (spec.name, id(item) if not isinstance(item, Path) else hash(item))
            if key in self.cache:
                out[k] = self.cache[key]
            else:
                todo.append((k, key, item))
        if todo:
            arrays = np.stack([load_rgb(item, spec.input_size) for _, _, item in todo])
            feats = extract_features(self.models[spec.name], spec, arrays)
            for (k, key, _), f in zip(todo, feats, strict=True):
                self.cache[key] = out[k] = f
        return np.stack(out)


def peer_accuracy(project, spec, tags, test_feats, test_labels) -> float:
    """scikit-learn's LogisticRegressionCV on the project's cached training features."""
    from sklearn.linear_model import LogisticRegressionCV

    images = project.images
    feats, missing = project.cache.features_many(
        [im.sha256 for im in images], spec.name, spec.input_size
    )
    assert not missing
    y = np.array([tags.index(im.tags[0]) for im in images])
    folds = max(2, min(5, np.bincount(y).min()))
    lr = LogisticRegressionCV(Cs=list(C_GRID), cv=int(folds), max_iter=5000)
    lr.fit(np.asarray(l2_normalise(feats)), y)
    return float((lr.predict(np.asarray(l2_normalise(test_feats))) == test_labels).mean())


def head_accuracy(it, test_feats, test_labels) -> float:
    w = it.weights()
    x = l2_normalise(test_feats) if it.record.head_input == "l2" else test_feats
    probs = np.asarray(probabilities(np.asarray(x) @ w["head.kernel"] + w["head.bias"], it.kind))
    return float((probs.argmax(1) == test_labels).mean())


def run_one(root, dataset, spec, per_tag, seed, pool, test_fixed, test_features, adv_minutes):
    split = fashion if dataset == "fashion" else photos
    train, test = split(per_tag, seed, pool, test_fixed)
    project = ic.Project.create(root / f"{dataset}-{spec.name}-{per_tag}-{seed}")
    project.add_images([item for item, _ in train], tags=[[tag] for _, tag in train])
    started = time.perf_counter()
    it = project.train(budget="quick", model=spec.name, seed=seed).wait()
    seconds = time.perf_counter() - started
    tags = it.classes
    test_labels = np.array([tags.index(tag) for _, tag in test])
    test_feats = test_features.get(spec, test)
    row = {
        "quick": head_accuracy(it, test_feats, test_labels),
        "cv": float(it.metrics["overall"]["accuracy"]),
        "peer": peer_accuracy(project, spec, tags, test_feats, test_labels),
        "seconds": seconds,
        "folds": it.evaluation.get("folds"),
    }
    if adv_minutes:
        started = time.perf_counter()
        run = project.train(budget="advanced", model=spec.name, minutes=adv_minutes, seed=seed)
        adv = run.wait()
        arrays = np.stack([load_rgb(item, spec.input_size) for item, _ in test])
        probs = adv.predictor.predict_arrays(arrays)
        row["advanced"] = float((probs.argmax(1) == test_labels).mean())
        row["advanced_s"] = time.perf_counter() - started
        row["advanced_kept"] = "fine-tuned" not in adv.evaluation.get("note", "")
    project.close()
    return row


def timing(root: Path) -> None:
    ds = datasets.fashion_mnist(n_per_class=50, split="train", seed=7)
    project = ic.Project.create(root / "timing")
    ds.to_project(project)
    t = time.perf_counter()
    it = project.train(budget="quick").wait()
    cold = time.perf_counter() - t
    t = time.perf_counter()
    project.train(budget="quick").wait()
    warm = time.perf_counter() - t
    print(
        f"quick training, 500 new images, default backbone {it.model}: cold {cold:.1f} s "
        f"(target <= 20 s), cached features {warm:.2f} s (target <= 2 s)",
        flush=True,
    )
    project.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["fashion", "photos"])
    parser.add_argument(
        "--backbones",
        nargs="+",
        default=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"],
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[5, 10, 20])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--advanced-minutes", type=float, default=0.0)
    parser.add_argument("--advanced-sizes", nargs="+", type=int, default=[20])
    parser.add_argument("--timing", action="store_true")
    args = parser.parse_args(argv)
    test_features = TestFeatures()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.timing:
            timing(root)
        for dataset in args.datasets:
            pool, test_fixed = load_pool(dataset, root)
            print(f"\n{dataset}: test accuracy, mean over {args.seeds} seed(s)", flush=True)
            print(
                f"{'backbone':<20}{'per tag':>8}{'quick':>8}{'CV est.':>9}{'CV-test':>9}"
                f"{'LR peer':>9}{'q-peer':>8}{'quick s':>9}{'advanced':>10}",
                flush=True,
            )
            for b, name in enumerate(args.backbones):
                spec = ic.models.get(name)
                for per_tag in args.sizes:
                    adv = args.advanced_minutes if b == 0 and per_tag in args.advanced_sizes else 0
                    rows = [
                        run_one(
                            root, dataset, spec, per_tag, seed, pool, test_fixed, test_features, adv
                        )
                        for seed in range(args.seeds)
                    ]
                    mean = {
                        k: np.mean([r[k] for r in rows]) for k in ("quick", "cv", "peer", "seconds")
                    }
                    gap = max(abs(r["cv"] - r["quick"]) for r in rows)
                    adv_text = ""
                    if adv:
                        adv_acc = np.mean([r["advanced"] for r in rows])
                        kept = sum(r["advanced_kept"] for r in rows)
                        adv_text = (
                            f"{adv_acc:.3f} ({adv_acc - mean['quick']:+.3f} vs quick, "
                            f"{np.mean([r['advanced_s'] for r in rows]):.0f} s, "
                            f"head kept {kept}/{len(rows)})"
                        )
                    print(
                        f"{name:<20}{per_tag:>8}{mean['quick']:>8.3f}{mean['cv']:>9.3f}"
                        f"{gap:>9.3f}{mean['peer']:>9.3f}{mean['quick'] - mean['peer']:>+8.3f}"
                        f"{mean['seconds']:>9.1f}  {adv_text}",
                        flush=True,
                    )
    print(
        "\ntargets: quick >= LR peer at every size (q-peer >= 0); |CV - test| <= 0.05 "
        "(CV-test is the largest gap over seeds); advanced >= quick + 0.02 at 20 per tag"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
