"""Few-shot transfer learning through the Project, as a user runs it, against scikit-learn.

For each backbone (EfficientNet-Lite0/1/2), dataset (Fashion-MNIST; real photos from
``photo_set.py``; drawn images, emoji on varied canvases, from ``drawn_set.py``), size
(5 / 10 / 20 training images per tag) and unlabelled pool (``--pool``), over seeds, it
prints:

- ``quick``: test accuracy of the iteration ``project.train(budget="quick",
  model=<backbone>)`` saves, its cross-validated accuracy (what the report shows) and the
  gap between the two, and the seconds the training took (feature extraction included);
- ``default``: the same for ``project.train(budget="quick")`` with no model named, as a
  user runs it (the backbone it used is named in the row);
- the peer: scikit-learn's ``LogisticRegressionCV`` on the same frozen, L2-normalised
  features the project cached for its labelled images, C chosen by 5-fold CV on the
  training images only;
- a summary line per dataset, size and pool: the best single-backbone peer, and the
  margin of the default quick (and of the best forced quick) against it;
- with ``--advanced-minutes``: the ``advanced`` budget's test accuracy at the sizes of
  ``--advanced-sizes``, for the first backbone given, and whether it kept the head.

``--timing`` adds the end-to-end quick training on 500 new Fashion-MNIST images, cold
(features not cached) and cached, with the default backbone.

Unlabelled pool (``--pool none rest``: one row each): ``none`` imports only the labelled
training images; ``rest`` also imports, untagged, every image of the set that is neither
train nor test, before ``project.train``. For Fashion-MNIST that is the rest of the
1000-image train pool (the test set is Fashion-MNIST's own test split). For the photo and
drawn sets, where train and "every other image" are the whole set, ``rest`` in ``--pool``
splits the other images of each tag in two, seeded: half the pool, half the test set, the
same test set for the ``none`` rows (so the two rows compare); with ``--pool none`` alone
the test set is every other image, as before. The peer never sees the pool.

Nothing here chooses a setting on the test images: they are only scored.

Usage::

    .venv/bin/python benchmarks/bench_transfer.py --datasets fashion photos \\
        --backbones efficientnet_lite0 efficientnet_lite1 efficientnet_lite2 --seeds 2
    .venv/bin/python benchmarks/bench_transfer.py --datasets drawn photos fashion \\
        --pool none rest --seeds 2
    .venv/bin/python benchmarks/bench_transfer.py --backbones efficientnet_lite0 \\
        --sizes 20 --advanced-minutes 3 --advanced-sizes 20

The photo set needs ``apt-get install -y --no-install-recommends tuxpaint-stamps-default
gcompris-qt-data``, the drawn set ``fonts-noto-color-emoji`` (``make bench-deps``).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import jupyter_imgclass as ic
from jupyter_imgclass.data import datasets
from jupyter_imgclass.data.images import load_rgb
from jupyter_imgclass.models.apply import extract_features, probabilities
from jupyter_imgclass.models.layers import l2_normalise
from jupyter_imgclass.training.logistic import C_GRID

sys.path.insert(0, str(Path(__file__).parent))
import drawn_set  # noqa: E402
import photo_set  # noqa: E402

POOLS = ("none", "rest")


def fashion(per_tag: int, seed: int, pool, test):
    """``(train, rest of the train pool, test)``: ``per_tag`` images of each tag drawn
    with ``seed`` as ``Dataset.subset`` draws them; the test set is the fixed one."""
    sub = pool.subset(per_tag, seed=seed)
    train = [(im, sub.tags[k]) for im, k in zip(sub.images, sub.labels, strict=True)]
    rng = np.random.default_rng(seed)  # the draw subset makes, to find what it left
    keep = set()
    for k in range(len(pool.tags)):
        keep.update(rng.permutation(np.flatnonzero(pool.labels == k))[:per_tag].tolist())
    chosen = np.array(sorted(keep), np.int64)
    assert np.array_equal(pool.images[chosen], sub.images), "Dataset.subset changed its draw"
    rest = [(pool.images[i], pool.tags[pool.labels[i]]) for i in range(len(pool)) if i not in keep]
    return train, rest, test


def halve(items, seed: int):
    """``(pool, test)``: each tag's items in a seeded order, the first half the pool (the
    smaller half when odd), the rest the test set."""
    by_tag: dict[str, list] = {}
    for item, tag in items:
        by_tag.setdefault(tag, []).append((item, tag))
    pool, test = [], []
    for tag in sorted(by_tag):
        order = random.Random(f"pool:{seed}:{tag}").sample(by_tag[tag], len(by_tag[tag]))
        pool += order[: len(order) // 2]
        test += order[len(order) // 2 :]
    return pool, test


def split(dataset: str, per_tag: int, seed: int, pool, test_fixed, with_pool: bool):
    """``(train, unlabelled, test)`` lists of ``(image, tag)``; ``unlabelled`` is empty
    unless ``with_pool`` (the tags of its images are never shown to the project)."""
    if dataset == "fashion":
        train, rest, test = fashion(per_tag, seed, pool, test_fixed)
        return train, rest if with_pool else [], test
    module = photo_set if dataset == "photos" else drawn_set
    train, rest = module.few_shot_split(pool, per_tag, seed)
    if not with_pool:
        return train, [], rest
    unlabelled, test = halve(rest, seed)
    return train, unlabelled, test


def load_pool(name: str, root: Path):
    """``(pool, fixed test set or None)``."""
    if name == "fashion":
        pool = datasets.fashion_mnist(n_per_class=100, split="train", seed=1)
        test_ds = datasets.fashion_mnist(n_per_class=100, split="test", seed=0)
        test = [(im, test_ds.tags[k]) for im, k in zip(test_ds.images, test_ds.labels, strict=True)]
        return pool, test
    if name == "drawn":
        return drawn_set.build(root / "drawn_set"), None
    return photo_set.build(root / "photo_set"), None


class TestFeatures:
    """Frozen features of test images, computed once per backbone."""

    def __init__(self):
        self.cache: dict[tuple[str, int], np.ndarray] = {}
        self.models = {}

    def get(self, spec, items, resize: str) -> np.ndarray:
        if spec.name not in self.models:
            from flax import nnx

            self.models[spec.name] = spec.create(2, rngs=nnx.Rngs(0))
        out, todo = [None] * len(items), []
        for k, (item, _) in enumerate(items):
            key = (spec.name, resize, id(item) if not isinstance(item, Path) else hash(item))
            if key in self.cache:
                out[k] = self.cache[key]
            else:
                todo.append((k, key, item))
        if todo:
            arrays = np.stack(
                [load_rgb(item, spec.input_size, resize=resize) for _, _, item in todo]
            )
            feats = extract_features(self.models[spec.name], spec, arrays)
            for (k, key, _), f in zip(todo, feats, strict=True):
                self.cache[key] = out[k] = f
        return np.stack(out)


def peer_accuracy(project, spec, tags, test_feats, test_labels, resize) -> float:
    """scikit-learn's LogisticRegressionCV on the project's cached training features (the
    images made square as quick's were: the peer sees the same pixels)."""
    from sklearn.linear_model import LogisticRegressionCV

    images = [im for im in project.images if im.tags]  # never the unlabelled pool
    feats, missing = project.cache.features_many(
        [im.sha256 for im in images], spec.name, spec.input_size, resize
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


def default_accuracy(it, test, test_labels, test_features) -> float:
    """Test accuracy of an iteration whose backbone we did not name: through the cached
    test features when its head is a plain linear head on one backbone, else through its
    predictor (any head a later change brings)."""
    w = it.weights()
    if set(w) == {"head.kernel", "head.bias"} and it.model in ic.models.names():
        feats = test_features.get(ic.models.get(it.model), test, it.resize)
        return head_accuracy(it, feats, test_labels)
    arrays = np.stack([load_rgb(item, it.input_size, resize=it.resize) for item, _ in test])
    return float((it.predictor.predict_arrays(arrays).argmax(1) == test_labels).mean())


def run_one(root, dataset, spec, per_tag, seed, data, test_features, adv_minutes, pool, resize):
    """One project: train (and, with ``pool == "rest"``, the unlabelled images) imported,
    quick trained on ``spec`` (None: the default backbone), scored on the test set."""
    train, unlabelled, test = data
    unlabelled = unlabelled if pool == "rest" else []
    name = spec.name if spec else "default"
    project = ic.Project.create(root / f"{dataset}-{name}-{per_tag}-{seed}-{pool}")
    project.add_images([item for item, _ in train], tags=[[tag] for _, tag in train])
    if unlabelled:
        project.add_images([item for item, _ in unlabelled])
    options = {"model": spec.name} if spec else {}
    if resize:
        options["resize"] = resize
    started = time.perf_counter()
    it = project.train(budget="quick", seed=seed, **options).wait()
    seconds = time.perf_counter() - started
    tags = it.classes
    test_labels = np.array([tags.index(tag) for _, tag in test])
    row = {
        "cv": float(it.metrics["overall"]["accuracy"]),
        "seconds": seconds,
        "folds": it.evaluation.get("folds"),
        "pool": len(unlabelled),
        "test": len(test),
        "model": it.model,
        "resize": it.resize,
    }
    if spec is None:
        row["quick"] = default_accuracy(it, test, test_labels, test_features)
        project.close()
        return row
    test_feats = test_features.get(spec, test, it.resize)
    row["quick"] = head_accuracy(it, test_feats, test_labels)
    row["peer"] = peer_accuracy(project, spec, tags, test_feats, test_labels, it.resize)
    if adv_minutes:
        started = time.perf_counter()
        run = project.train(
            budget="advanced", model=spec.name, minutes=adv_minutes, seed=seed, resize=it.resize
        )
        adv = run.wait()
        arrays = np.stack([load_rgb(item, adv.input_size, resize=adv.resize) for item, _ in test])
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


def summary(rows: dict, per_tag: int, pool: str) -> str:
    """The best single-backbone peer at one size and pool, and quick's margins."""
    peers = {b: r["peer"] for (b, n, p), r in rows.items() if n == per_tag and p == pool and b}
    if not peers:
        return ""
    best = max(peers, key=peers.get)
    text = f"  {per_tag:>2} per tag, pool {pool:<5}: best LR peer {best} {peers[best]:.3f}"
    default = rows.get((None, per_tag, pool))
    if default:
        margin = default["quick"] - peers[best]
        text += f"; quick (default, {default['model']}) {default['quick']:.3f} ({margin:+.3f})"
    forced = {b: r["quick"] for (b, n, p), r in rows.items() if n == per_tag and p == pool and b}
    top = max(forced, key=forced.get)
    text += f"; best forced quick {top} {forced[top]:.3f} ({forced[top] - peers[best]:+.3f})"
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["fashion", "photos"],
        choices=["fashion", "photos", "drawn"],
    )
    parser.add_argument(
        "--backbones",
        nargs="+",
        default=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"],
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[5, 10, 20])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument(
        "--pool",
        nargs="+",
        default=["none"],
        choices=POOLS,
        help="none: labelled images only; rest: also every non-train, non-test image "
        "imported untagged (both: one row each, on the same test set)",
    )
    parser.add_argument(
        "--no-default",
        action="store_true",
        help="skip the quick run with no model named (the 'default' rows)",
    )
    parser.add_argument("--advanced-minutes", type=float, default=0.0)
    parser.add_argument("--advanced-sizes", nargs="+", type=int, default=[20])
    parser.add_argument("--timing", action="store_true")
    parser.add_argument(
        "--top-stages",
        type=int,
        help="stages the advanced budget fine-tunes (the product's TOP_STAGES when not given)",
    )
    parser.add_argument(
        "--resize",
        choices=["squash", "pad", "crop"],
        help="how quick (and the peer, on the same features) makes images square; the "
        "product's default when not given",
    )
    args = parser.parse_args(argv)
    if args.top_stages is not None:
        from jupyter_imgclass.models import efficientnet_lite

        efficientnet_lite.TOP_STAGES = args.top_stages
    # scikit-learn announces changes of its defaults; the peer keeps today's (accuracy)
    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
    pools = [p for p in POOLS if p in args.pool]
    specs = [ic.models.get(name) for name in args.backbones]
    if not args.no_default:
        specs.append(None)
    test_features = TestFeatures()
    started_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.timing:
            timing(root)
        for dataset in args.datasets:
            pool, test_fixed = load_pool(dataset, root)
            print(f"\n{dataset}: test accuracy, mean over {args.seeds} seed(s)", flush=True)
            print(
                f"{'backbone':<20}{'per tag':>8}{'pool':>6}{'test':>6}{'quick':>8}{'CV est.':>9}"
                f"{'CV-test':>9}{'LR peer':>9}{'q-peer':>8}{'quick s':>9}{'advanced':>10}",
                flush=True,
            )
            means: dict[tuple, dict] = {}
            for b, spec in enumerate(specs):
                for per_tag in args.sizes:
                    data = [
                        split(dataset, per_tag, seed, pool, test_fixed, "rest" in pools)
                        for seed in range(args.seeds)
                    ]
                    for pool_kind in pools:
                        first = b == 0 and per_tag in args.advanced_sizes and pool_kind == pools[0]
                        adv = args.advanced_minutes if first else 0
                        rows = [
                            run_one(
                                root,
                                dataset,
                                spec,
                                per_tag,
                                seed,
                                data[seed],
                                test_features,
                                adv,
                                pool_kind,
                                args.resize,
                            )
                            for seed in range(args.seeds)
                        ]
                        keys = ["quick", "cv", "seconds", "pool", "test"]
                        keys += ["peer"] if spec else []
                        mean = {k: np.mean([r[k] for r in rows]) for k in keys}
                        models = sorted({r["model"] for r in rows})
                        mean["model"] = "/".join(models)
                        means[(spec.name if spec else None, per_tag, pool_kind)] = mean
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
                        label = (
                            spec.name
                            if spec
                            else "default: " + mean["model"].replace("efficientnet_", "")
                        )
                        peer = " " * 17
                        if spec:
                            peer = f"{mean['peer']:>9.3f}{mean['quick'] - mean['peer']:>+8.3f}"
                        print(
                            f"{label:<20}{per_tag:>8}{mean['pool']:>6.0f}{mean['test']:>6.0f}"
                            f"{mean['quick']:>8.3f}{mean['cv']:>9.3f}{gap:>9.3f}"
                            f"{peer}{mean['seconds']:>9.1f}  {adv_text}",
                            flush=True,
                        )
            print(f"{dataset}: quick against the best single-backbone LR peer", flush=True)
            for per_tag in args.sizes:
                for pool_kind in pools:
                    line = summary(means, per_tag, pool_kind)
                    if line:
                        print(line, flush=True)
    print(
        "\ntargets: quick >= LR peer at every size (q-peer >= 0); quick (default) >= the best "
        "single-backbone LR peer on every set and size, pool empty; with the pool, >= that "
        "peer + 0.03 at 5 and 10 per tag on drawn and photos; |CV - test| <= 0.05 (CV-test "
        "is the largest gap over seeds); advanced >= quick + 0.02 at 20 per tag"
    )
    print(f"total {time.perf_counter() - started_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
