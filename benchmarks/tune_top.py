"""Choosing the advanced budget's settings (rate, L2-SP pull, epochs) on validation images.

The settings of ``training.top`` are chosen here, on Fashion-MNIST *training-split* images
that the few-shot training set did not draw (the validation images), never on the test
images that ``bench_transfer.py`` reports. For each setting it prints the validation
accuracy of the head alone and of the fine-tuned top (its epoch count chosen by
cross-validation on the training images, as the project does), and the seconds.

Usage::

    .venv/bin/python benchmarks/tune_top.py --per-tag 20 --lrs 1e-4 3e-4 --pulls 1e-2 1e-1
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from jupyter_imgclass import models, training
from jupyter_imgclass.data import datasets
from jupyter_imgclass.data.labelled import cross_validation_folds
from jupyter_imgclass.models.apply import extract_features, extract_lower
from jupyter_imgclass.training.top import _Top


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-tag", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4])
    parser.add_argument("--pulls", type=float, nargs="+", default=[1e-2, 1e-1])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--val-per-tag", type=int, default=40)
    args = parser.parse_args(argv)
    spec = models.get(args.model)
    size = spec.input_size
    for seed in args.seeds:
        pool = datasets.fashion_mnist(
            n_per_class=args.per_tag + args.val_per_tag, split="train", seed=11 + seed
        )
        labels = np.asarray(pool.labels)
        train = np.concatenate(
            [np.flatnonzero(labels == c)[: args.per_tag] for c in range(len(pool.tags))]
        )
        val = np.setdiff1d(np.arange(len(labels)), train)
        images = np.stack([_resize(im, size) for im in pool.images])
        config = training.TrainConfig(
            model=spec.name, budget="advanced", num_classes=len(pool.tags), seed=seed
        )
        backbone = training.create_model(config, pretrained=True)
        feats = extract_features(backbone, spec, images[train])
        folds = cross_validation_folds(labels[train], "multiclass", seed=seed)
        head = training.fit_head(
            dataclasses.replace(config, label_smoothing=0.0),
            backbone,
            {"features": feats, "label": labels[train]},
            folds=folds,
        )
        model = training.weights_to_model(
            spec, len(pool.tags), head.weights, input_size=size, head_input=head.head_input
        )
        split = model.top_split(args.stages)
        acts = extract_lower(model, spec, images[train], split)
        mirrored = extract_lower(model, spec, images[train][:, :, ::-1], split)
        val_acts = extract_lower(model, spec, images[val], split)
        net = _Top(model, split, "multiclass", 1e-4, 0.0)
        head_val = (
            net.predict(net.start(net.final_head), val_acts).argmax(1) == labels[val]
        ).mean()
        head_cv = float((head.val_probabilities.argmax(1) == labels[train]).mean())
        print(
            f"seed {seed}: {args.per_tag}/tag, head: cv {head_cv:.3f} val {head_val:.3f}",
            flush=True,
        )
        for lr in args.lrs:
            for pull in args.pulls:
                t = time.perf_counter()
                top = training.fit_top(
                    config,
                    model,
                    {"activation": acts, "mirrored": mirrored, "label": labels[train]},
                    split=split,
                    folds=folds,
                    fold_heads=head.extra["fold_heads"],
                    epochs=args.epochs,
                    learning_rate=lr,
                    pull=pull,
                )
                tuned = training.weights_to_model(
                    spec, len(pool.tags), top.weights, input_size=size, head_input="l2"
                )
                tnet = _Top(tuned, split, "multiclass", lr, pull)
                probs = tnet.predict(tnet.start(tnet.final_head), val_acts)
                cv = [round(h["val_accuracy"], 3) for h in top.history]
                print(
                    f"  lr {lr:g} pull {pull:g}: epochs {top.best_epoch} "
                    f"val {(probs.argmax(1) == labels[val]).mean():.3f} "
                    f"({time.perf_counter() - t:.0f} s) cv by epoch {cv}",
                    flush=True,
                )
    return 0


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    return np.asarray(img.resize((size, size), Image.BILINEAR))


if __name__ == "__main__":
    raise SystemExit(main())
