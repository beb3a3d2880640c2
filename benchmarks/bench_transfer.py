"""Transfer learning through the Project, as a user runs it, against scikit-learn.

Prints:
- end-to-end ``quick`` training time on 500 Fashion-MNIST images, cold (features not
  cached) and warm (cached features);
- held-out accuracy of ``quick`` and ``advanced`` with 10 and 20 images per class, beside
  a logistic regression (scikit-learn) trained on the same frozen EfficientNet features and
  the same split (the peer);
- single-image predict latency p50/p99.

Usage: .venv/bin/python benchmarks/bench_transfer.py [--advanced-minutes 1.0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import jupyter_imgclass as ic
from jupyter_imgclass import datasets


def quick_timing(root: Path) -> None:
    ds = datasets.fashion_mnist(n_per_class=50, split="train", seed=1)
    project = ic.Project.create(root / "timing")
    ds.to_project(project)
    t = time.perf_counter()
    project.train(budget="quick", model="efficientnet_lite0", show=False).wait()
    cold = time.perf_counter() - t
    t = time.perf_counter()
    it = project.train(budget="quick", model="efficientnet_lite0", show=False).wait()
    warm = time.perf_counter() - t
    print(f"quick training, 500 images: cold {cold:.1f} s (target <= 20 s), "
          f"cached features {warm:.2f} s (target <= 2 s)")  # fmt: skip
    image = ds.images[0]
    it.predict(image)
    lat = []
    for _ in range(100):
        t = time.perf_counter()
        it.predict(image)
        lat.append((time.perf_counter() - t) * 1000)
    print(f"single-image predict latency: p50 {np.percentile(lat, 50):.1f} ms, "
          f"p99 {np.percentile(lat, 99):.1f} ms")  # fmt: skip
    project.close()


def few_shot(root: Path, per_class: int, advanced_minutes: float, test) -> None:
    from sklearn.linear_model import LogisticRegression

    ds = datasets.fashion_mnist(n_per_class=per_class, split="train", seed=per_class)
    project = ic.Project.create(root / f"few-{per_class}")
    ds.to_project(project)
    quick = project.train(budget="quick", model="efficientnet_lite0", show=False).wait()
    adv = project.train(
        budget="advanced", model="efficientnet_lite0", minutes=advanced_minutes, show=False
    ).wait()

    # The peer: logistic regression on the cached frozen features of the same training split.
    spec = ic.models.get("efficientnet_lite0")
    train_ids = quick.config["train_image_ids"]
    records = project.images_by_id(train_ids)
    feats = np.stack(
        [project.cache.features_get(r.sha256, spec.name, spec.input_size) for r in records]
    )
    labels = np.array([quick.classes.index(r.tags[0]) for r in records])
    lr = LogisticRegression(max_iter=2000, C=1.0).fit(feats, labels)

    from jupyter_imgclass import training as engine

    backbone = engine.create_model(
        engine.TrainConfig(model=spec.name, num_classes=len(quick.classes)), pretrained=True
    )
    test_feats = engine.extract_features(backbone, spec, test["arrays"])
    truth = np.array([quick.classes.index(ds.tags[i]) for i in test["labels"]])
    acc_lr = (lr.predict(test_feats) == truth).mean()

    def acc(it):
        probs = it.predictor.predict_arrays(test["arrays"])
        return (probs.argmax(1) == truth).mean()

    print(
        f"{per_class:>3} images/class | quick {acc(quick):.3f} | "
        f"advanced ({advanced_minutes} min) {acc(adv):.3f} | "
        f"logistic regression on frozen features {acc_lr:.3f}"
    )
    project.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--advanced-minutes", type=float, default=1.0)
    parser.add_argument("--test-per-class", type=int, default=50)
    args = parser.parse_args()
    from PIL import Image

    test = datasets.fashion_mnist(n_per_class=args.test_per_class, split="test", seed=0)
    arrays = np.stack(
        [np.asarray(Image.fromarray(im).resize((224, 224), Image.BILINEAR)) for im in test.images]
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        quick_timing(root)
        print(f"accuracy on {len(test)} Fashion-MNIST test images:")
        for per_class in (10, 20):
            few_shot(
                root, per_class, args.advanced_minutes, {"arrays": arrays, "labels": test.labels}
            )


if __name__ == "__main__":
    main()
