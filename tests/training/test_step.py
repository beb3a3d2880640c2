"""The pieces of a training step: optax's schedule as the loops read it, masked decay."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jupyter_imgclass import models
from jupyter_imgclass.training.step import adamw, decay_mask, learning_rates, schedule


def test_schedule_warms_up_then_decays_to_one_percent():
    sched = schedule(1e-2, 0.1)
    lr = learning_rates(sched, np.array([0.0, 0.05, 0.1, 0.55, 1.0, 2.0]))
    # Hand-computed: linear to the peak over the first 10%, cosine from the peak to 1%.
    mid = 1e-4 + (1e-2 - 1e-4) * 0.5 * (1 + math.cos(math.pi * 0.5))
    np.testing.assert_allclose(lr, [0.0, 5e-3, 1e-2, mid, 1e-4, 1e-4], rtol=1e-5, atol=1e-9)
    assert float(learning_rates(schedule(3e-3, 0.0), 0.0)) == pytest.approx(3e-3)


def test_weight_decay_skips_biases_and_batch_norm():
    model = models.get("small_cnn").create(3, rngs=nnx.Rngs(0))
    _, params, _ = nnx.split(model, nnx.Param, ...)
    mask = {
        ".".join(map(str, k)): bool(v.get_value()) for k, v in nnx.to_flat_state(decay_mask(params))
    }
    assert mask["head.kernel"] and mask["conv1.kernel"]
    assert not mask["head.bias"] and not mask["bn1.scale"] and not mask["bn1.bias"]
    # With zero gradients only decayed weights move: a kernel shrinks, a bias does not.
    tx = adamw(1e-1, 0.5)
    state = tx.init(params)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    moved = {
        ".".join(map(str, k)): float(jnp.abs(v.get_value()).max())
        for k, v in nnx.to_flat_state(updates)
    }
    assert moved["head.kernel"] > 0 and moved["conv1.kernel"] > 0
    assert moved["head.bias"] == 0 and moved["bn1.scale"] == 0 and moved["dense1.bias"] == 0


def test_adamw_is_optax_adamw_with_an_injected_rate():
    tx = adamw(1e-3, 1e-4)
    state = tx.init({"w": jnp.ones((2, 2))})
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(1e-3)
    assert isinstance(tx, optax.GradientTransformation | optax.GradientTransformationExtraArgs)
