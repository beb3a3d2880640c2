"""On-device augmentation inside the jitted training step."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["augment"]


def augment(x: jax.Array, key: jax.Array, names: tuple[str, ...]) -> jax.Array:
    """Random flips / shifts / brightness on ``[N, H, W, C]`` floats in [0, 1].

    Args:
        x: the batch, scaled to [0, 1] (before the network's normalisation).
        key: a JAX random key (one per step).
        names: which of ``"flip"``, ``"shift"``, ``"brightness"`` to apply.
    """
    n, h, w, _ = x.shape
    k_flip, k_shift, k_bright = jax.random.split(key, 3)
    if "flip" in names:
        flip = jax.random.bernoulli(k_flip, 0.5, (n, 1, 1, 1))
        x = jnp.where(flip, x[:, :, ::-1, :], x)
    if "shift" in names:
        pad = max(1, round(h / 10))
        xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
        offsets = jax.random.randint(k_shift, (n, 2), 0, 2 * pad + 1)

        def crop(img, off):
            return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

        x = jax.vmap(crop)(xp, offsets)
    if "brightness" in names:
        kb, kc = jax.random.split(k_bright)
        scale = jax.random.uniform(kb, (n, 1, 1, 1), minval=0.8, maxval=1.2)
        shift = jax.random.uniform(kc, (n, 1, 1, 1), minval=-0.08, maxval=0.08)
        x = jnp.clip(x * scale + shift, 0.0, 1.0)
    return x
