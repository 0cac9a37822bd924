"""What ancestral sampling draws from: temperature, top-k and top-p (nucleus) truncation of the
log-probabilities, and one draw per row from a key or a key per row."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def sampling_logits(log_probs: Array, temperature: Array | float, top_k: Array | int,
                    top_p: Array | float) -> Array:
    """The logits `sample` draws from: log_probs / temperature, then all but the `top_k` most
    likely tokens masked (0: keep all), then top-p (nucleus) truncation: keep the fewest most
    likely tokens whose probability (after temperature and top-k) adds up to >= top_p. Tokens
    tied with the last kept one are kept too. [batch, vocab] -> [batch, vocab], -inf = dropped.

    Temperature must be > 0 here; `sample` treats temperature 0 as argmax.
    """
    logits = log_probs / temperature
    ranked = -jnp.sort(-logits, axis=-1)  # descending
    vocab = logits.shape[-1]
    # top_k is traced (no recompile per value), so the cut-off is read from the sorted logits
    # rather than taken with lax.top_k, whose k must be static.
    kth = jnp.take_along_axis(ranked, jnp.clip(top_k - 1, 0, vocab - 1)[None, None], -1)
    logits = jnp.where((top_k > 0) & (logits < kth), -jnp.inf, logits)
    ranked = jnp.where((top_k > 0) & (ranked < kth), -jnp.inf, ranked)
    probs = jax.nn.softmax(ranked, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs  # probability of the more likely tokens
    smallest_kept = jnp.where(mass_before < top_p, ranked, jnp.inf).min(-1, keepdims=True)
    return jnp.where(logits < smallest_kept, -jnp.inf, logits)


def is_key_batch(rng: Array) -> bool:
    """Whether `rng` holds one PRNG key per row: [batch] typed keys or [batch, 2] raw ones."""
    typed = jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
    return rng.ndim == (1 if typed else 2)


def draw(rng: Array, position: Array, logits: Array) -> Array:
    """One token per row from logits [batch, vocab] at step `position`: with fold_in(rng,
    position) for the whole batch, or fold_in(rng[r], position) for row r of a key batch."""
    if is_key_batch(rng):
        return jax.vmap(
            lambda key, row: jax.random.categorical(jax.random.fold_in(key, position), row)
        )(rng, logits)
    return jax.random.categorical(jax.random.fold_in(rng, position), logits, axis=-1)
