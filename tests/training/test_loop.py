"""fit's named steps and callbacks (training.loop): halts, keep-best, events, batches."""

from __future__ import annotations

import concurrent.futures
import math
import time
from types import SimpleNamespace

import numpy as np
import pytest

from jupyter_imgclass import training
from jupyter_imgclass.training import loop
from jupyter_imgclass.training.loop import (
    Batches,
    Callback,
    Deadline,
    Halt,
    KeepBest,
    ProgressEvents,
    ShouldStop,
    TimeLimit,
)


def _state(**fields):
    """The few TrainState fields the callbacks read."""
    base = {"processes": 1, "eval_s": 0.0, "train_started": None, "step": 0, "epoch": 1}
    return SimpleNamespace(**{**base, **fields})


def test_every_limit_is_asked_and_a_stop_outranks_a_deadline():
    calls = []

    def should_stop():
        calls.append(1)
        return True

    past = Deadline(time.time() - 1)
    state = _state()
    assert loop._poll(state, [ShouldStop(should_stop), past]) is Halt.STOPPED
    assert loop._poll(state, [past, ShouldStop(should_stop)]) is Halt.DEADLINE
    assert len(calls) == 2  # should_stop once a poll, even when a deadline halts too
    assert loop._poll(state, [ShouldStop(lambda: False), Callback()]) is Halt.NONE


def test_time_limit_counts_from_the_training_clock():
    limit = TimeLimit(5.0)
    assert limit.on_step_begin(_state()) is Halt.NONE  # still compiling
    assert limit.on_step_begin(_state(train_started=time.perf_counter() - 4.0)) is Halt.NONE
    assert limit.on_step_begin(_state(train_started=time.perf_counter() - 5.0)) is Halt.DEADLINE


def test_deadline_leaves_room_for_a_step_and_the_last_validation():
    deadline = Deadline(time.time() + 10.0)
    assert deadline.on_step_begin(_state(eval_s=6.0)) is Halt.NONE
    deadline.step_s = 4.5  # 4.5 + 6 > 10
    assert deadline.on_step_begin(_state(eval_s=6.0)) is Halt.DEADLINE


def test_keep_best_keeps_the_first_of_equals_and_ignores_nan():
    best = KeepBest("multiclass")
    assert best.consider(1, {"val_accuracy": 0.5, "val_loss": 1.0}, "one", None)
    assert best.consider(2, {"val_accuracy": 0.5, "val_loss": 0.9}, "two", None)  # lower loss
    assert not best.consider(3, {"val_accuracy": 0.5, "val_loss": 0.9}, "three", None)
    assert not best.consider(4, {"val_accuracy": 0.5, "val_loss": math.nan}, "nan", None)
    assert best.consider(5, {"val_accuracy": 0.6, "val_loss": 2.0}, "five", None)
    assert (best.epoch, best.state) == (5, "five")
    tags = KeepBest("multilabel")  # average precision, not accuracy
    tags.consider(1, {"val_average_precision": 0.7, "val_accuracy": 0.9, "val_loss": 1}, 1, 0)
    tags.consider(2, {"val_average_precision": 0.8, "val_accuracy": 0.1, "val_loss": 1}, 2, 0)
    assert tags.epoch == 2


def test_progress_events_throttle_steps_and_pass_records_on():
    events = []
    progress = ProgressEvents(events.append, interval_s=3600.0)
    state = _state(config=SimpleNamespace(model="small_cnn"), compile_s=1.23456, step=1)
    progress.on_fit_begin(state)
    progress.on_train_begin(state)
    progress.on_step_end(state, np.float32(0.5), 0.0)
    state.step = 2
    progress.on_step_end(state, np.float32(0.25), 0.0)  # within the interval: dropped
    progress.on_epoch_end(state, {"epoch": 1, "loss": 0.4}, np.zeros((1, 2)))
    assert events == [
        {"phase": "compiling", "model": "small_cnn"},
        {"phase": "training", "compile_s": 1.235},
        {"event": "step", "step": 1, "epoch": 1, "loss": 0.5},
        {"event": "epoch", "epoch": 1, "loss": 0.4},
    ]
    ProgressEvents(None, 0.0).on_step_end(state, np.float32(1.0), 0.0)  # no listener: fine


def test_epoch_record_eta_is_the_sooner_of_epochs_and_time_left():
    state = _state(epoch=1, epochs=4, time_limit=None, train_started=time.perf_counter() - 10)
    metrics = {"val_loss": 0.3, "val_accuracy": 0.9}
    record = loop.epoch_record(state, (0.5, 0.8), metrics, Halt.NONE)
    assert list(record) == [
        "epoch", "epochs", "loss", "accuracy", "val_loss", "val_accuracy", "elapsed_s", "eta_s",
    ]  # fmt: skip
    assert record["eta_s"] == pytest.approx(30.0, abs=0.5)  # 10 s an epoch, 3 to go
    state.time_limit = 12.0
    partial = loop.epoch_record(state, (0.5, 0.8), metrics, Halt.STOPPED)
    assert partial["eta_s"] == pytest.approx(2.0, abs=0.5) and partial["partial"] is True


def test_batches_are_full_and_split_between_processes():
    images = np.arange(10)
    batches = [
        Batches(images, images, np.ones(10), 4, np.random.default_rng(0), None, rank, 2)
        for rank in (0, 1)
    ]
    assert len(batches[0]) == 3
    order = batches[0].order()
    assert len(order) == 12 and sorted(set(order.tolist())) == list(range(10))
    halves = [b.read(order, 1)[0] for b in batches]  # each process reads its 2 rows
    np.testing.assert_array_equal(np.concatenate(halves), order[4:8])


def test_a_callback_halts_an_epoch_after_its_steps():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (96, 28, 28, 3), dtype=np.uint8)
    y = (x[..., 0].mean(axis=(1, 2)) > 127).astype(np.int32)
    config = training.TrainConfig(model="small_cnn", epochs=1, batch_size=32, augment=False)
    state = loop.create_train_state(config, {"image": x, "label": y}, {"image": x, "label": y})

    class AfterTwo(Callback):
        def on_step_begin(self, state):
            return Halt.STOPPED if state.step >= 2 else Halt.NONE

    with concurrent.futures.ThreadPoolExecutor(1) as prefetch:
        halt, (loss, accuracy) = loop.train_epoch(state, [AfterTwo()], prefetch)
    assert halt is Halt.STOPPED and state.step == 2 and state.images_seen == 32
    assert np.isfinite(loss) and 0.0 <= accuracy <= 1.0
    probs, metrics = loop.eval_model(state)
    assert probs.shape == (96, 2) and "val_accuracy" in metrics and state.eval_s > 0
