"""Scheduled sampling: p(step), the per-step teacher-forcing mask, and the decoder unroll.

Teacher forcing trains the decoder on the gold previous token; decoding feeds it its own. Scheduled
sampling (Bengio et al., 2015) mixes the two: at train step `step`, every (example, position) reads
the gold token with probability p(step) and otherwise the model's own token from the previous
position. Everything here goes through the model seam of `flax_s2s.models` (`encode`, `init_cache`,
`step`, `forward`), so it works for any model:

- `mode="exact"`: one `lax.scan` over target positions calling `model.step`, the very function
  decoding uses, so a position reads what the model really produced one step before, given
  everything it read so far.
- `mode="two_pass"`: a teacher-forced `model.forward` pass gives the model's own tokens; they are
  mixed with the gold tokens by the mask and a second `forward` pass reads the mix (Mihaylova &
  Martins, 2019; Duckworth et al., 2019). Parallel, but the own tokens are conditioned on gold
  prefixes, not on the mixed ones.

When p == 1 at every step (constant schedule, p=1: the default) training takes `model.forward`
and nothing here is traced; the choice is made from the config, in Python.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from flax_s2s import decoding
from flax_s2s.models import decoder_inputs
from flax_s2s.models import unroll as unroll_policy

Array = jax.Array
Schedule = Callable[[Array | int], Array]

SCHEDULES = ("constant", "linear", "exponential", "inverse_sigmoid")
CHOICES = ("argmax", "sample")
LATER_CHOICES = ("soft",)  # documented in configs/default.py, refused by config validation
MODES = ("exact", "two_pass")

# Folded into the train step's key to give the forcing keys: the dropout keys come from splitting
# the same step key, and fold_in with a fixed constant is a different function of it, so the two
# streams never share a key.
_FORCING_STREAM = 0x5C4ED


def make_schedule(tf_config: ml_collections.ConfigDict) -> Schedule:
    """p(step), the probability of feeding the gold token, from `config.teacher_forcing`.

    - constant: p
    - linear: max(floor, k - slope * step)
    - exponential: max(floor, k ** step), 0 < k < 1
    - inverse_sigmoid: max(floor, k / (k + exp(step / k))), k >= 1

    The returned function takes a Python int or an integer array (traced or not) and returns
    float32 p of the same shape; it is finite at any step an int32 can count.
    """
    kind, floor, k = tf_config.schedule, tf_config.floor, tf_config.k
    if kind == "constant":
        schedule = optax.constant_schedule(tf_config.p)
    elif kind == "linear":
        # optax computes floor + (k - floor) * (1 - step / transition_steps) until transition_steps
        # and floor after it; a fractional transition length makes its slope exactly `slope`.
        schedule = optax.linear_schedule(
            init_value=k, end_value=floor, transition_steps=(k - floor) / tf_config.slope
        )
    elif kind == "exponential":
        schedule = optax.exponential_decay(
            init_value=1.0, transition_steps=1, decay_rate=k, end_value=floor
        )
    elif kind == "inverse_sigmoid":
        schedule = _inverse_sigmoid(k, floor)
    else:
        raise ValueError(f"teacher_forcing.schedule must be one of {list(SCHEDULES)}, got {kind!r}")
    # float32, and elementwise on an array of steps (optax's constant schedule ignores its input)
    return lambda step: jnp.broadcast_to(jnp.asarray(schedule(step), jnp.float32), jnp.shape(step))


def _inverse_sigmoid(k: float, floor: float) -> Schedule:
    """max(floor, k / (k + exp(step / k))). Not an optax schedule (optax has no sigmoid decay).

    Written as sigmoid(log k - step / k), which is the same number, so that exp never overflows.
    """

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        return jnp.maximum(floor, jax.nn.sigmoid(jnp.log(k) - step / k))

    return schedule


def inverse_sigmoid_k(midpoint_step: float) -> float:
    """The k >= 1 of the inverse-sigmoid schedule whose p falls to 1/2 at `midpoint_step` > 0:
    the root of k ln k = midpoint_step, found by bisection (k ln k increases for k >= 1)."""
    if not (midpoint_step > 0 and math.isfinite(midpoint_step)):
        raise ValueError(f"midpoint_step={midpoint_step}: must be finite and > 0")
    low, high = 1.0, max(midpoint_step, math.e)  # k ln k is 0 at 1 and >= midpoint at high
    for _ in range(100):  # halves a bracket of at most midpoint_step: ample for float64
        middle = (low + high) / 2
        low, high = (middle, high) if middle * math.log(middle) < midpoint_step else (low, middle)
    return (low + high) / 2


def forcing_keys(step_rng: Array) -> tuple[Array, Array]:
    """(mask_key, choice_key) for the train step whose key is `step_rng = fold_in(rng, step)`."""
    mask_key, choice_key = jax.random.split(jax.random.fold_in(step_rng, _FORCING_STREAM))
    return mask_key, choice_key


def draw_mask(key: Array, teacher_forcing_prob: Array | float, shape: tuple[int, int]) -> Array:
    """bool [batch, tgt_len]: True where the decoder reads the gold token. Position 0 always reads
    BOS (True), since there is no own token before it."""
    mask = jax.random.bernoulli(key, teacher_forcing_prob, shape)
    return mask.at[:, 0].set(True)


def choose_tokens(logits: Array, key: Array | None, choice: str, temperature: float = 1.0) -> Array:
    """The model's own tokens, int32 [...], from logits [..., vocab], as decoding would emit them
    (PAD and BOS never). Under stop_gradient: no gradient flows through the choice."""
    log_probs = decoding.output_log_probs(jax.lax.stop_gradient(logits))
    if choice == "argmax":
        return jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
    if choice == "sample":
        if key is None:
            raise ValueError("teacher_forcing.choice='sample' needs a key")
        return jax.random.categorical(key, log_probs / temperature, axis=-1).astype(jnp.int32)
    raise ValueError(f"teacher_forcing.choice must be one of {list(CHOICES)}, got {choice!r}")


def exact_unroll(
    model: Any,
    variables: Any,
    encoded: Any,
    gold_inputs: Array,
    mask: Array,
    choice_key: Array | None,
    *,
    choice: str = "argmax",
    temperature: float = 1.0,
    train: bool = False,
    rng: Array | None = None,
) -> tuple[Array, Array]:
    """One `lax.scan` of `model.step` over target positions, reading gold or own tokens.

    Args:
      gold_inputs: [batch, tgt_len] teacher-forced decoder inputs (BOS, then targets shifted).
      mask: bool [batch, tgt_len]; True reads gold_inputs[:, t], False the model's own token chosen
        from its logits at t - 1. mask[:, 0] must be True.
      rng: dropout key; position t gets fold_in(rng, t), as in the seam's teacher-forced `forward`.
    Returns:
      (logits [batch, tgt_len, vocab], the tokens the decoder read [batch, tgt_len] int32).
    """
    batch, length = gold_inputs.shape
    cache = model.init_cache(variables, encoded, length)
    # None (argmax needs no key) is an empty pytree: the scan hands None to every position.
    choice_keys = None if choice_key is None else jax.random.split(choice_key, length)

    def body(carry, inputs):
        cache, own_tokens = carry
        position, gold_tokens, read_gold, key = inputs
        prev_tokens = jnp.where(read_gold, gold_tokens, own_tokens)
        step_rng = None if rng is None else jax.random.fold_in(rng, position)
        logits, cache = model.step(
            variables, encoded, cache, prev_tokens, position, train=train, rng=step_rng
        )
        next_own = choose_tokens(logits, key, choice, temperature)
        return (cache, next_own), (logits, prev_tokens)

    init = (cache, gold_inputs[:, 0].astype(jnp.int32))  # never read: mask[:, 0] is True
    scanned = (jnp.arange(length), gold_inputs.astype(jnp.int32).T, mask.T, choice_keys)
    _, (logits, read_tokens) = jax.lax.scan(
        body, init, scanned, unroll=unroll_policy.scan_unroll(length)
    )
    return logits.transpose(1, 0, 2), read_tokens.T


def two_pass_unroll(
    model: Any,
    variables: Any,
    encoded: Any,
    gold_inputs: Array,
    mask: Array,
    choice_key: Array | None,
    *,
    choice: str = "argmax",
    temperature: float = 1.0,
    train: bool = False,
    rng: Array | None = None,
) -> tuple[Array, Array]:
    """Two parallel `model.forward` passes; same arguments and returns as `exact_unroll`.

    The first pass runs as at inference (train=False, no dropout) and only supplies the own tokens;
    it is under stop_gradient. The second pass reads the mix and carries the gradient.
    """
    first_logits = jax.lax.stop_gradient(model.forward(variables, encoded, gold_inputs))
    own_tokens = choose_tokens(first_logits, choice_key, choice, temperature)
    own_inputs = decoder_inputs(own_tokens)  # the token predicted at t - 1 is read at t
    read_tokens = jnp.where(mask, gold_inputs, own_inputs).astype(jnp.int32)
    logits = model.forward(variables, encoded, read_tokens, train=train, rng=rng)
    return logits, read_tokens


UNROLLS = {"exact": exact_unroll, "two_pass": two_pass_unroll}  # by config.teacher_forcing.mode


@dataclasses.dataclass(frozen=True)
class TeacherForcing:
    """How one training run feeds its decoder, built from `config.teacher_forcing`."""

    schedule: Schedule
    always_gold: bool  # p == 1 at every step: train on the parallel `forward`, trace no unroll
    choice: str = "argmax"
    temperature: float = 1.0
    mode: str = "exact"

    @classmethod
    def from_config(cls, tf_config: ml_collections.ConfigDict) -> TeacherForcing:
        always_gold = tf_config.schedule == "constant" and tf_config.p == 1.0
        return cls(
            schedule=make_schedule(tf_config),
            always_gold=always_gold,
            choice=tf_config.choice,
            temperature=tf_config.temperature,
            mode=tf_config.mode,
        )

    def prob(self, step: Array | int) -> Array:
        """p(step): the probability of reading the gold token at train step `step`."""
        return self.schedule(step)

    def mask(self, step_rng: Array, step: Array | int, shape: tuple[int, int]) -> Array:
        """The train step's teacher-forcing mask, bool [batch, tgt_len] (True: gold)."""
        mask_key, _ = forcing_keys(step_rng)
        return draw_mask(mask_key, self.prob(step), shape)

    def train_logits(
        self,
        model: Any,
        variables: Any,
        encoded: Any,
        tgt_tokens: Array,
        *,
        step: Array | int,
        step_rng: Array,
        dropout_rng: Array | None,
    ) -> Array:
        """Decoder logits [batch, tgt_len, vocab] for one train step on targets [batch, tgt_len].

        step_rng: the train step's key, fold_in(state.rng, step); the mask and the sampled tokens
        use keys folded from it (`forcing_keys`), dropout uses `dropout_rng`.
        """
        gold_inputs = decoder_inputs(tgt_tokens)
        if self.always_gold:
            return model.forward(variables, encoded, gold_inputs, train=True, rng=dropout_rng)
        mask = self.mask(step_rng, step, gold_inputs.shape)
        _, choice_key = forcing_keys(step_rng)
        logits, _ = UNROLLS[self.mode](
            model, variables, encoded, gold_inputs, mask, choice_key,
            choice=self.choice, temperature=self.temperature, train=True, rng=dropout_rng,
        )
        return logits
