"""Active learning through the Project, as a user runs it: suggestion strategies vs random.

For each dataset, a pool of untagged images enters one project. Each run starts with 2
labelled images per tag (the same for every strategy of a seed), then labels in rounds:
``project.suggest(step, strategy=...)`` picks the images, their true tags are set (the
oracle stands in for the user), and the quick budget retrains. Test accuracy (on test
images outside the pool) is printed against the number of labels, per strategy, averaged
over seeds, with the labels each strategy needed to reach random choice's final accuracy.

Digits and real photos (``photo_set.py``) are the selection sets (the default strategy is
chosen on them); Fashion-MNIST is the held-out check. Nothing here chooses a setting on
the test images.

Usage::

    .venv/bin/python benchmarks/active_learning.py --datasets digits photos fashion --seeds 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from flax import nnx

import jupyter_imgclass as ic
from jupyter_imgclass import models
from jupyter_imgclass.data import datasets
from jupyter_imgclass.data.images import load_rgb
from jupyter_imgclass.models.apply import extract_features, probabilities
from jupyter_imgclass.models.layers import l2_normalise


def load(name: str, pool_per_tag: int, seed: int):
    if name == "digits":
        everything = datasets.digits()
        rng = np.random.default_rng(100 + seed)
        order = rng.permutation(len(everything))
        pool_idx, test_idx = [], []
        for k in range(len(everything.tags)):
            members = [i for i in order if everything.labels[i] == k]
            pool_idx += members[:pool_per_tag]
            test_idx += members[pool_per_tag : pool_per_tag + 50]
        pick = lambda idx: (everything.images[idx], everything.labels[idx])  # noqa: E731
        return everything.tags, pick(np.array(pool_idx)), pick(np.array(test_idx))
    if name == "photos":  # real photos (benchmarks/photo_set.py; make bench-deps)
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        import photo_set

        found = photo_set.build(Path(tempfile.gettempdir()) / "imgclass-photo-set")
        tags = sorted(found)
        rng = np.random.default_rng(100 + seed)
        pool, test = [], []
        for k, tag in enumerate(tags):
            paths = [found[tag][i] for i in rng.permutation(len(found[tag]))]
            pool += [(p, k) for p in paths[: min(pool_per_tag, len(paths) // 2)]]
            test += [(p, k) for p in paths[min(pool_per_tag, len(paths) // 2) :]]

        def split(items):
            return [p for p, _ in items], np.array([k for _, k in items])

        return tags, split(pool), split(test)
    pool = datasets.fashion_mnist(n_per_class=pool_per_tag, split="train", seed=100 + seed)
    test = datasets.fashion_mnist(n_per_class=50, split="test", seed=100 + seed)
    return pool.tags, (pool.images, pool.labels), (test.images, test.labels)


def run(name: str, strategies, seeds, pool_per_tag: int, step: int, rounds: int, root: Path):
    spec = models.get("efficientnet_lite0")
    backbone = spec.create(1, rngs=nnx.Rngs(0), pretrained=True)
    curves = {s: [] for s in strategies}
    for seed in seeds:
        tags, (pool_x, pool_y), (test_x, test_y) = load(name, pool_per_tag, seed)
        arrays = np.stack([load_rgb(im, spec.input_size) for im in test_x])  # as the cache does
        test_feats = np.asarray(l2_normalise(extract_features(backbone, spec, arrays)))
        project = ic.Project.create(root / f"{name}-{seed}")
        report = project.add_images(list(pool_x))
        truth = dict(zip(report.added, (tags[k] for k in pool_y), strict=True))
        rng = np.random.default_rng(seed)
        start = [
            image_id
            for k in range(len(tags))
            for image_id in rng.permutation([i for i, t in truth.items() if t == tags[k]])[:2]
        ]
        for strategy in strategies:
            for image in project.images:  # a fresh start for each strategy
                if image.tags:
                    project.set_tags(image.id, None)
            for image_id in start:
                project.set_tags(int(image_id), truth[int(image_id)])
            curve = []
            for r in range(rounds + 1):
                it = project.train(budget="quick", seed=seed).wait()
                w = it.weights()
                probs = probabilities(test_feats @ w["head.kernel"] + w["head.bias"], it.kind)
                predicted = np.asarray(probs).argmax(1)
                accuracy = float(
                    np.mean([it.classes[p] for p in predicted] == tags_of(tags, test_y))
                )
                curve.append((len([im for im in project.images if im.tags]), accuracy))
                if r == rounds:
                    break
                for image in project.suggest(step, strategy=strategy, seed=seed * 100 + r):
                    project.set_tags(image.id, truth[image.id])
            curves[strategy].append(curve)
            print(
                f"  {name} seed {seed} {strategy:<9}", [round(a, 3) for _, a in curve], flush=True
            )
        project.close()
    return curves


def tags_of(tags, labels):
    return np.array([tags[k] for k in labels])


def labels_to_reach(labels: list[int], accuracy, target: float) -> float | None:
    """The labels at which the curve first reaches ``target``, linear between the
    measured rounds (rounds are ``--step`` labels apart, so the first round at or above
    the target alone would count savings in whole rounds only); None when never."""
    for k, (n, a) in enumerate(zip(labels, accuracy, strict=True)):
        if a >= target - 1e-9:
            if k == 0:
                return float(n)
            n0, a0 = labels[k - 1], accuracy[k - 1]
            return n0 + (n - n0) * (target - a0) / (a - a0)
    return None


def summary(name: str, curves: dict) -> None:
    labels = [n for n, _ in next(iter(curves.values()))[0]]
    mean = {s: np.mean([[a for _, a in c] for c in cs], axis=0) for s, cs in curves.items()}
    print(f"\n{name}: test accuracy by labels (mean over {len(next(iter(curves.values())))} seeds)")
    print(
        f"{'strategy':<18}"
        + "".join(f"{n:>8}" for n in labels)
        + "   labels to reach random's final (linear between rounds)"
    )
    final = mean["random"][-1] if "random" in mean else None
    # Savings are counted against random's own labels to its final accuracy (below the
    # last round when its curve levels off), both read linearly between rounds.
    baseline = labels_to_reach(labels, mean["random"], final) if final is not None else None
    for s, m in mean.items():
        reach = "—"
        if final is not None:
            needed = labels_to_reach(labels, m, final)
            first = next(n for n, a in zip(labels, m, strict=True) if a >= final - 1e-9) if (
                needed is not None) else None  # fmt: skip
            reach = (
                f"{needed:.1f} labels ({1 - needed / baseline:.0%} fewer; first round at or "
                f"above: {first})"
                if needed is not None
                else "not reached"
            )
        below = sum(a < r - 1e-9 for a, r in zip(m, mean.get("random", m), strict=True))
        print(
            f"{s:<18}"
            + "".join(f"{a:>8.3f}" for a in m)
            + f"   {reach}; rounds below random: {below}"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "fashion"])
    parser.add_argument(
        "--strategies", nargs="+", default=["random", "typical_uncertain", "herding_uncertain"]
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pool-per-tag", type=int, default=30)
    parser.add_argument("--step", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            curves = run(
                name, args.strategies, range(args.seeds), args.pool_per_tag, args.step,
                args.rounds, Path(tmp),
            )  # fmt: skip
            summary(name, curves)
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
