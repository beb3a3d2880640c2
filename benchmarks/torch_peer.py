"""The PyTorch peer of small_cnn for benchmarks only (torch is never a dependency).

Get torch with ``.venv/bin/pip install torch==2.13.0`` (the CPU wheel), or in a separate
virtualenv; the benchmarks skip the peer politely when it is absent.
"""

from __future__ import annotations

import time

import numpy as np


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def make_net(num_classes: int = 10, input_size: int = 28):
    """The same network as ``jupyter_imgclass.models.small_cnn`` (NCHW, PyTorch defaults)."""
    import torch
    from torch import nn

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    side = input_size // 4
    return nn.Sequential(
        *block(3, 32),
        *block(32, 32),
        nn.MaxPool2d(2),
        *block(32, 64),
        *block(64, 64),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(side * side * 64, 128),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(128, num_classes),
    ).to(memory_format=torch.channels_last)


class Peer:
    """Trains the peer network with AdamW, label smoothing 0.1, on uint8 NHWC arrays."""

    def __init__(self, threads: int = 2, lr: float = 1e-3, seed: int = 0):
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.torch = torch
        self.net = make_net()
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=1e-4)
        self.loss = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def _tensor(self, images: np.ndarray):
        torch = self.torch
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - 0.5) / 0.25
        return x.contiguous(memory_format=torch.channels_last)

    def train_steps(self, images: np.ndarray, labels: np.ndarray, batch: int, steps: int, rng):
        """Runs ``steps`` steps on random batches; returns images/s."""
        torch = self.torch
        self.net.train()
        t0 = time.perf_counter()
        for _ in range(steps):
            idx = rng.integers(0, len(images), batch)
            x, y = self._tensor(images[idx]), torch.from_numpy(labels[idx].astype(np.int64))
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss(self.net(x), y)
            loss.backward()
            self.opt.step()
        return steps * batch / (time.perf_counter() - t0)

    def epoch(self, images: np.ndarray, labels: np.ndarray, batch: int, rng) -> float:
        """One shuffled pass; returns images/s."""
        order = rng.permutation(len(images))
        torch = self.torch
        self.net.train()
        t0 = time.perf_counter()
        for s in range(0, len(order) - batch + 1, batch):
            idx = order[s : s + batch]
            x, y = self._tensor(images[idx]), torch.from_numpy(labels[idx].astype(np.int64))
            self.opt.zero_grad(set_to_none=True)
            self.loss(self.net(x), y).backward()
            self.opt.step()
        return (len(order) // batch) * batch / (time.perf_counter() - t0)

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        torch = self.torch
        self.net.eval()
        correct = 0
        with torch.no_grad():
            for s in range(0, len(images), 1000):
                out = self.net(self._tensor(images[s : s + 1000]))
                correct += int((out.argmax(1).numpy() == labels[s : s + 1000]).sum())
        return correct / len(images)
