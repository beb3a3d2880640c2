"""Fine-tuning EfficientNet-Lite0 (the whole network, 224 px) against the same network in
PyTorch with the same ImageNet weights, in one command.

- throughput: training images/s, batch 32, alternating rounds (this machine's speed
  drifts): ``training.fit`` (AdamW, float32, batch statistics updated) against
  ``efficientnet_lite_pytorch``'s EfficientNet-Lite0 (the class the weight package was
  made for) loaded with the same weights, AdamW, 2 threads, channels-last;
- time to accuracy: both fine-tune from the ImageNet weights on a few-shot Fashion-MNIST
  set (``--per-tag`` training images per tag, upscaled to 224 px), the held-out images
  scored after each epoch; prints accuracy against seconds (scoring included in both).
  No setting is chosen on the held-out images: both use the engine's recipe (AdamW 5e-4
  with weight decay 1e-4 on kernels only, the engine's warm-up and cosine schedule read
  from ``training.step``, label smoothing 0.1, no augmentation, the last batch of each
  epoch topped up with random repeats). ``--peer-recipe constant`` gives the peer a
  constant rate and drops the last partial batch instead (the earlier comparison).

The peer is a benchmark-only install::

    .venv/bin/pip install torch==2.13.0
    .venv/bin/pip install --no-deps efficientnet-lite-pytorch==0.1.0

Usage::

    .venv/bin/python benchmarks/bench_finetune.py                  # both parts
    .venv/bin/python benchmarks/bench_finetune.py --skip accuracy  # throughput only
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from PIL import Image

SIZE = 224
MEAN, STD = 127.0, 128.0  # the Lite weights' preprocessing, as the engine's spec has it


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per throughput round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--per-tag", type=int, default=10, help="few-shot training images per tag")
    ap.add_argument("--test", type=int, default=300, help="held-out images")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads")
    ap.add_argument("--skip", default="", help="comma list: throughput,accuracy")
    ap.add_argument("--peer-recipe", choices=("engine", "constant"), default="engine",
                    help="the peer's schedule in the accuracy part")  # fmt: skip
    return ap.parse_args(argv)


def fashion(per_tag: int, test: int, seed: int = 0):
    from jupyter_imgclass import datasets

    tr = datasets.fashion_mnist(split="train", rgb=True)
    te = datasets.fashion_mnist(split="test", rgb=True)
    rng = np.random.default_rng(seed)
    pick = np.concatenate(
        [rng.choice(np.flatnonzero(tr.labels == k), per_tag, replace=False) for k in range(10)]
    )
    held = rng.choice(len(te.images), test, replace=False)

    def up(images):
        return np.stack([np.asarray(Image.fromarray(im).resize((SIZE, SIZE))) for im in images])

    return (up(tr.images[pick]), tr.labels[pick].astype(np.int32)), (
        up(te.images[held]),
        te.labels[held].astype(np.int32),
    )


# ------------------------------------------------------------------------------ PyTorch
class TorchPeer:
    def __init__(self, threads: int, lr: float = 5e-4, seed: int = 0):
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        from jupyter_imgclass.models.efficientnet_lite import imagenet_state_dict

        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.torch = torch
        net = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
        state = {k: torch.from_numpy(np.array(v)) for k, v in imagenet_state_dict(
            "efficientnet_lite0").items()}  # fmt: skip
        missing = net.load_state_dict(state, strict=False).missing_keys
        assert not missing, missing
        net._fc = torch.nn.Linear(net._fc.in_features, 10)  # a new head, as ours
        self.net = net.to(memory_format=torch.channels_last)
        decay = [p for p in self.net.parameters() if p.ndim > 1]  # as step.decay_mask
        rest = [p for p in self.net.parameters() if p.ndim <= 1]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 1e-4}, {"params": rest, "weight_decay": 0.0}], lr=lr
        )
        self.loss = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def tensor(self, images: np.ndarray):
        x = (images.astype(np.float32) - MEAN) / STD
        t = self.torch.from_numpy(x).permute(0, 3, 1, 2)
        return t.contiguous(memory_format=self.torch.channels_last)

    def step(self, images, labels, lr: float | None = None) -> None:
        torch = self.torch
        if lr is not None:
            for group in self.opt.param_groups:
                group["lr"] = lr
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.net(self.tensor(images)), torch.from_numpy(labels.astype(np.int64)))
        loss.backward()
        self.opt.step()

    def accuracy(self, images, labels) -> float:
        torch = self.torch
        self.net.eval()
        with torch.no_grad():
            out = [self.net(self.tensor(images[s : s + 50])).argmax(1).numpy()
                   for s in range(0, len(images), 50)]  # fmt: skip
        return float((np.concatenate(out) == labels).mean())


def torch_throughput(peer: TorchPeer, images, labels, batch: int, steps: int, rng) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        idx = rng.integers(0, len(images), batch)
        peer.step(images[idx], labels[idx])
    return steps * batch / (time.perf_counter() - started)


# -------------------------------------------------------------------------------- ours
def config(epochs: int, batch: int, **extra):
    from jupyter_imgclass import training

    return training.TrainConfig(
        model="efficientnet_lite0", epochs=epochs, batch_size=batch, augment=False,
        num_classes=10, pretrained=True, **extra,
    )  # fmt: skip


def flax_throughput(images, labels, batch: int, steps: int) -> float:
    from jupyter_imgclass import training

    n = batch * (steps + 1)  # the first (compiling) step is not counted
    sub = {"image": images[:n], "label": labels[:n]}
    return training.fit(
        config(1, batch), sub, {"image": images[:2], "label": labels[:2]}
    ).images_per_s


def throughput(args, images, labels) -> None:
    rng = np.random.default_rng(0)
    reps = -(-args.batch * (args.steps + 1) // len(images))
    images, labels = np.concatenate([images] * reps), np.concatenate([labels] * reps)
    peer = TorchPeer(args.threads)
    flax_throughput(images, labels, args.batch, 1)  # compile outside the timing
    torch_throughput(peer, images, labels, args.batch, 1, rng)
    ours, theirs = [], []
    for r in range(args.rounds):
        ours.append(flax_throughput(images, labels, args.batch, args.steps))
        theirs.append(torch_throughput(peer, images, labels, args.batch, args.steps, rng))
        print(f"round {r + 1}: flax {ours[-1]:.1f} img/s, torch {theirs[-1]:.1f}, "
              f"ratio {ours[-1] / theirs[-1]:.2f}x", flush=True)  # fmt: skip
    f, t = float(np.median(ours)), float(np.median(theirs))
    print(f"FINE-TUNING THROUGHPUT (EfficientNet-Lite0, {SIZE} px, batch {args.batch}):")
    print(f"  flax  {f:.1f} img/s\n  torch {t:.1f} img/s ({args.threads} threads)")
    print(f"  ratio flax/torch {f / t:.2f}x", flush=True)


def accuracy(args, train, test) -> None:
    from jupyter_imgclass import training

    print(f"\nTIME TO ACCURACY ({args.per_tag} images per tag, {len(test[0])} held out, "
          f"batch {min(args.batch, len(train[0]))}):")  # fmt: skip
    result = training.fit(
        config(args.epochs, min(args.batch, len(train[0]))),
        {"image": train[0], "label": train[1]},
        {"image": test[0], "label": test[1]},
    )
    for h in result.history:
        print(f"  flax  epoch {h['epoch']}: {h['val_accuracy']:.3f} after {h['elapsed_s']:.1f} s "
              "(scoring included)", flush=True)  # fmt: skip
    from jupyter_imgclass.training.step import learning_rates, schedule

    peer = TorchPeer(args.threads)
    rng = np.random.default_rng(0)
    spent = 0.0
    batch = min(args.batch, len(train[0]))
    engine = args.peer_recipe == "engine"
    per_epoch = -(-len(train[0]) // batch) if engine else len(train[0]) // batch
    sched = schedule(5e-4, config(1, batch).warmup_fraction)
    step = 0
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(train[0]))
        if engine and len(order) % batch:  # as training.fit: top up the last batch
            extra = rng.choice(len(order), batch - len(order) % batch, replace=False)
            order = np.concatenate([order, extra])
        started = time.perf_counter()
        for s in range(0, len(order) - batch + 1, batch):
            idx = order[s : s + batch]
            lr = float(learning_rates(sched, step / (per_epoch * args.epochs))) if engine else None
            peer.step(train[0][idx], train[1][idx], lr)
            step += 1
        score = peer.accuracy(*test)
        spent += time.perf_counter() - started
        print(f"  torch epoch {epoch}: {score:.3f} after {spent:.1f} s (scoring included; "
              f"{args.peer_recipe} recipe)", flush=True)  # fmt: skip


def main(argv=None) -> int:
    args = parse(argv)
    try:
        import efficientnet_lite_pytorch  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        print("the PyTorch peer needs torch and efficientnet-lite-pytorch (see --help)")
        return 1
    skip = set(filter(None, args.skip.split(",")))
    train, test = fashion(args.per_tag, args.test)
    if "throughput" not in skip:
        throughput(args, *train)
    if "accuracy" not in skip:
        accuracy(args, train, test)
    return 0


if __name__ == "__main__":
    sys.exit(main())
