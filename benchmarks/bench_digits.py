"""Held-out accuracy of small_cnn on scikit-learn's digits (target: 99% or better).

    .venv/bin/python benchmarks/bench_digits.py [--epochs 20] [--batch 64]

The 8x8 digits are upscaled to 28x28 RGB; a seeded stratified 80/20 split; no
horizontal flips (digits are not mirror-symmetric), small shifts and brightness only.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from jupyter_imgclass import training
    from jupyter_imgclass.data import datasets
    from jupyter_imgclass.data.labelled import stratified_split
    from jupyter_imgclass.evaluate import compute_metrics

    ds = datasets.digits(size=28)
    labels = ds.labels.astype(np.int32)
    tr, va = stratified_split(labels, "multiclass", seed=args.seed)
    config = training.TrainConfig(
        model="small_cnn",
        epochs=args.epochs,
        batch_size=args.batch,
        augment=("shift", "brightness"),
        seed=args.seed,
    )

    def show(e):
        if e.get("event") == "epoch":
            print(
                f"epoch {e['epoch']:>2}: loss {e['loss']:.3f} val_accuracy "
                f"{e['val_accuracy']:.4f} ({e['elapsed_s']:.0f} s)",
                flush=True,
            )

    t0 = time.perf_counter()
    result = training.fit(
        config,
        {"image": ds.images[tr], "label": labels[tr]},
        {"image": ds.images[va], "label": labels[va]},
        on_event=show,
    )
    metrics = compute_metrics(labels[va], result.val_probabilities, ds.tags, "multiclass")
    print(
        f"DIGITS: held-out accuracy {metrics['overall']['accuracy']:.4f} on {len(va)} images "
        f"(best epoch {result.best_epoch} of {len(result.history)}), "
        f"{time.perf_counter() - t0:.0f} s, {result.images_per_s:.0f} img/s training"
    )


if __name__ == "__main__":
    main()
