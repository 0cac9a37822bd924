"""Scheduled sampling: the per-step teacher-forcing mask and the decoder unroll (p(step) and q(t):
`flax_s2s.schedules`).

Teacher forcing trains the decoder on the gold previous token; decoding feeds it its own. Scheduled
sampling (Bengio et al., 2015) mixes the two: at train step `step`, every (example, position) reads
the gold token with probability p(step) and otherwise the model's own token from the previous
position. Everything here goes through the model seam of `flax_s2s.models` (`encode`, `init_cache`,
`step`, `forward`), so it works for any model:

Models (and stand-ins for them) provide `special_tokens`: the decoder starts from its bos and never
reads its pad or bos as an own token.

- `mode="exact"`: a position reads what the model really produced one step before, given
  everything it read so far, as `model.step` (the very function decoding uses) produces it. The
  definition is one `lax.scan` of `model.step` over target positions (`scanned_unroll`); models
  with a parallel `forward` compute it more cheaply as a scan without gradient that only chooses
  the tokens, then one parallel pass over them (`exact_unroll`, which says why the two are equal:
  the same logits and gradients without dropout; with dropout the same tokens read, while a
  Transformer's parallel pass draws its dropout independently of the scan's).
- `mode="two_pass"`: a teacher-forced `model.forward` pass gives the model's own tokens; they are
  mixed with the gold tokens by the mask and a second `forward` pass reads the mix (Mihaylova &
  Martins, 2019; Duckworth et al., 2019). Parallel, but the own tokens are conditioned on gold
  prefixes, not on the mixed ones.

The gold probability is p(step, t) = p(step) x q(t) (or their minimum), with p(step) a schedule
over train steps and q(t) an optional one over the decoder's input position t (Liu et al., EMNLP
2021: later positions, where errors have compounded, read their own tokens more often).

When p == 1 at every step and position (constant schedule, p=1, no position schedule: the
default) training takes `model.forward` and nothing here is traced; the choice is made from the
config, in Python.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from flax_s2s import config_checks, decoding
from flax_s2s.errors import ConfigError
from flax_s2s.models import decoder_inputs
from flax_s2s.models import unroll as unroll_policy
from flax_s2s.schedules import (
    COMBINES,
    POSITION_SCHEDULES,
    SCHEDULES,
    Schedule,
    check_schedules,
    make_position_schedule,
    make_schedule,
)
from flax_s2s.special_tokens import DEFAULT_SPECIAL_TOKENS, SpecialTokens

Array = jax.Array
CHOICES = ("argmax", "sample")
LATER_CHOICES = ("soft",)  # documented in configs/default.py, refused by config validation

# Folded into the train step's key to give the forcing keys: the dropout keys come from splitting
# the same step key, and fold_in with a fixed constant is a different function of it, so the two
# streams never share a key.
_FORCING_STREAM = 0x5C4ED


def forcing_keys(step_rng: Array) -> tuple[Array, Array]:
    """(mask_key, choice_key) for the train step whose key is `step_rng = fold_in(rng, step)`."""
    mask_key, choice_key = jax.random.split(jax.random.fold_in(step_rng, _FORCING_STREAM))
    return mask_key, choice_key


def draw_mask(key: Array, teacher_forcing_prob: Array | float, shape: tuple[int, int]) -> Array:
    """bool [batch, tgt_len]: True where the decoder reads the gold token, with probability
    `teacher_forcing_prob`: a scalar, or [tgt_len] per position (the uniforms drawn are the same
    either way, so a flat position schedule draws the very mask a scalar does). Position 0 always
    reads BOS (True), since there is no own token before it."""
    mask = jax.random.bernoulli(key, teacher_forcing_prob, shape)
    return mask.at[:, 0].set(True)


def choose_tokens(
    logits: Array,
    key: Array | None,
    choice: str,
    temperature: float = 1.0,
    special_tokens: SpecialTokens = DEFAULT_SPECIAL_TOKENS,
) -> Array:
    """The model's own tokens, int32 [...], from logits [..., vocab], as decoding would emit them
    (the model's PAD and BOS never). Under stop_gradient: no gradient flows through the choice."""
    log_probs = decoding.output_log_probs(jax.lax.stop_gradient(logits), special_tokens)
    if choice == "argmax":
        return jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
    if choice == "sample":
        if key is None:
            raise ValueError("teacher_forcing.choice='sample' needs a key")
        return jax.random.categorical(key, log_probs / temperature, axis=-1).astype(jnp.int32)
    raise ValueError(f"teacher_forcing.choice must be one of {list(CHOICES)}, got {choice!r}")


def scanned_unroll(
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
    keep_logits: bool = True,
) -> tuple[Array | None, Array]:
    """Exact scheduled sampling by definition: one `lax.scan` of `model.step` over target
    positions, reading gold or own tokens, with the gradient through the whole scan.

    Args:
      gold_inputs: [batch, tgt_len] teacher-forced decoder inputs (BOS, then targets shifted).
      mask: bool [batch, tgt_len]; True reads gold_inputs[:, t], False the model's own token chosen
        from its logits at t - 1. mask[:, 0] must be True.
      rng: dropout key; position t gets fold_in(rng, t), as in the seam's teacher-forced `forward`.
      keep_logits: False stacks no logits (returned as None): the scan only chooses tokens.
    Returns:
      (logits [batch, tgt_len, vocab] or None, the tokens the decoder read [batch, tgt_len] int32).
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
        next_own = choose_tokens(logits, key, choice, temperature, model.special_tokens)
        return (cache, next_own), (logits if keep_logits else None, prev_tokens)

    init = (cache, gold_inputs[:, 0].astype(jnp.int32))  # never read: mask[:, 0] is True
    scanned = (jnp.arange(length), gold_inputs.astype(jnp.int32).T, mask.T, choice_keys)
    _, (logits, read_tokens) = jax.lax.scan(
        body, init, scanned, unroll=unroll_policy.scan_unroll(length)
    )
    return (None if logits is None else logits.transpose(1, 0, 2)), read_tokens.T


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
    """`scanned_unroll`'s logits, read tokens and gradients, from a scan without gradient that
    only chooses the tokens and one `model.forward` over them that carries the gradient.

    Why the two are equal: the logits at position t are a function of the parameters and of the
    tokens read at positions <= t, and nothing else; the teacher-forced `forward` over the read
    tokens computes that very function (it is `step` applied position by position, in parallel).
    The read tokens depend on the parameters only through `choose_tokens`, which is under
    stop_gradient, so the scan's gradient reaches the parameters only through each position's
    direct dependence, which is what `forward` differentiates. With dropout, the scan draws
    `scanned_unroll`'s keys, so the read tokens are the same; `forward` then draws its own dropout
    (the same for an RNN, whose `forward` is `step` scanned with fold_in(rng, t)).

    Same arguments and returns as `scanned_unroll`.
    """
    frozen = jax.lax.stop_gradient((variables, encoded))
    _, read_tokens = scanned_unroll(
        model, *frozen, gold_inputs, mask, choice_key,
        choice=choice, temperature=temperature, train=train, rng=rng, keep_logits=False,
    )
    logits = model.forward(variables, encoded, read_tokens, train=train, rng=rng)
    return logits, read_tokens


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
    segments: dict[str, Array] | None = None,
) -> tuple[Array, Array]:
    """Two parallel `model.forward` passes; same arguments and returns as `exact_unroll`.

    The first pass runs as at inference (train=False, no dropout) and only supplies the own tokens;
    it is under stop_gradient. The second pass reads the mix and carries the gradient. Packed rows
    (`segments`, the targets' {"segment_ids", "positions"}): both passes are packed, and the own
    tokens are shifted right per example, so each example starts from BOS.
    """
    packed = _packed(segments)
    first_logits = jax.lax.stop_gradient(model.forward(variables, encoded, gold_inputs, **packed))
    own_tokens = choose_tokens(first_logits, choice_key, choice, temperature, model.special_tokens)
    # the token predicted at t - 1 is read at t
    segment_ids = None if segments is None else segments["segment_ids"]
    own_inputs = decoder_inputs(own_tokens, model.special_tokens.bos, segment_ids)
    read_tokens = jnp.where(mask, gold_inputs, own_inputs).astype(jnp.int32)
    logits = model.forward(variables, encoded, read_tokens, train=train, rng=rng, **packed)
    return logits, read_tokens


def _packed(segments: dict[str, Array] | None) -> dict[str, Any]:
    """The `segments` keyword of a packed `forward`; none at all for unpacked rows, so that a
    model without packing support is called as before."""
    return {} if segments is None else {"segments": segments}


UNROLLS = {"exact": exact_unroll, "two_pass": two_pass_unroll}  # by config.teacher_forcing.mode
MODES = tuple(UNROLLS)
# The modes that train on packed rows: the parallel ones. "exact" scans the decoder step, whose
# cache would carry from one example of a row into the next.
PACKED_MODES = ("two_pass",)


def always_gold(tf_config: ml_collections.ConfigDict) -> bool:
    """Whether `config.teacher_forcing` feeds the gold token at every step and position (p = 1,
    constant, no position schedule): full teacher forcing, trained on the parallel `forward`."""
    return (tf_config.schedule == "constant" and tf_config.p == 1.0
            and tf_config.position_schedule == "none")


@dataclasses.dataclass(frozen=True)
class TeacherForcing:
    """How one training run feeds its decoder, built from `config.teacher_forcing`."""

    schedule: Schedule
    always_gold: bool  # p == 1 at every step and position: train on the parallel `forward`
    choice: str = "argmax"
    temperature: float = 1.0
    mode: str = "exact"
    position_schedule: Schedule | None = None  # q(t); None: 1 at every position
    combine: str = "product"
    # mode="exact" only: True grades `scanned_unroll` (one scan with its gradient), False
    # `exact_unroll` (a scan without gradient, then a parallel `forward`). None picks per model:
    # the scan where `forward` is itself a scan (RNNs), where the second pass could only add work.
    graded_scan: bool | None = None

    @classmethod
    def from_config(cls, tf_config: ml_collections.ConfigDict) -> TeacherForcing:
        position_schedule = make_position_schedule(tf_config)
        return cls(
            schedule=make_schedule(tf_config),
            always_gold=always_gold(tf_config),
            choice=tf_config.choice,
            temperature=tf_config.temperature,
            mode=tf_config.mode,
            position_schedule=position_schedule,
            combine=tf_config.position_combine,
        )

    def prob(self, step: Array | int) -> Array:
        """p(step): the train-step part of the gold probability (all of it without a position
        schedule)."""
        return self.schedule(step)

    def prob_by_position(self, step: Array | int, length: int) -> Array:
        """p(step, t) for t in [0, length): float32 [length]. Position 0 reads BOS regardless."""
        by_step = jnp.broadcast_to(self.prob(step), (length,))
        if self.position_schedule is None:
            return by_step
        by_position = self.position_schedule(jnp.arange(length))
        if self.combine == "min":
            return jnp.minimum(by_step, by_position)
        if self.combine == "product":
            return by_step * by_position
        raise ValueError(f"teacher_forcing.position_combine must be one of {list(COMBINES)}, "
                         f"got {self.combine!r}")

    def mask(
        self, step_rng: Array, step: Array | int, shape: tuple[int, int],
        positions: Array | None = None,
    ) -> Array:
        """The train step's teacher-forcing mask, bool [batch, tgt_len] (True: gold). Packed
        rows: `positions` [batch, tgt_len], each example's own decoder positions, which the
        position schedule reads (the uniforms drawn are the same)."""
        mask_key, _ = forcing_keys(step_rng)
        prob = self.prob_by_position(step, shape[1])
        if positions is None:
            return draw_mask(mask_key, prob, shape)
        return draw_mask(mask_key, prob[positions], shape) | (positions == 0)  # each BOS is gold

    def unroll(self, model: Any) -> Callable[..., tuple[Array, Array]]:
        """The unroll this run trains `model` with (see `graded_scan`)."""
        if self.mode != "exact":
            return UNROLLS[self.mode]
        graded_scan = self.graded_scan
        if graded_scan is None:
            graded_scan = not model.has_parallel_forward
        return scanned_unroll if graded_scan else exact_unroll

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
        mask: Array | None = None,
        segments: dict[str, Array] | None = None,
    ) -> tuple[Array, Array | None]:
        """`train_unroll`'s logits and mask."""
        logits, mask, _ = self.train_unroll(
            model, variables, encoded, tgt_tokens, step=step, step_rng=step_rng,
            dropout_rng=dropout_rng, mask=mask, segments=segments,
        )
        return logits, mask

    def train_unroll(
        self,
        model: Any,
        variables: Any,
        encoded: Any,
        tgt_tokens: Array,
        *,
        step: Array | int,
        step_rng: Array,
        dropout_rng: Array | None,
        mask: Array | None = None,
        segments: dict[str, Array] | None = None,
    ) -> tuple[Array, Array | None, Array]:
        """Decoder logits [batch, tgt_len, vocab] for one train step on targets [batch, tgt_len],
        the mask the decoder read by (bool, True: gold; None on the teacher-forced path) and the
        tokens it read, int32 [batch, tgt_len].

        step_rng: the train step's key, fold_in(state.rng, step); the mask and the sampled tokens
        use keys folded from it (`forcing_keys`), dropout uses `dropout_rng`.
        mask: bool [batch, tgt_len] to read by instead of drawing one from `step_rng`: a
        microbatch passes its rows of the mask its whole batch drew (`self.mask`), so that
        splitting a batch changes no gold/own choice.
        segments: packed rows' target {"segment_ids", "positions"} [batch, tgt_len] (with
        `encoded` from a packed encode): teacher forcing, or a mode in PACKED_MODES.
        """
        segment_ids = None if segments is None else segments["segment_ids"]
        gold_inputs = decoder_inputs(tgt_tokens, model.special_tokens.bos, segment_ids)
        packed = _packed(segments)
        if self.always_gold:
            return model.forward(variables, encoded, gold_inputs, train=True, rng=dropout_rng,
                                 **packed), None, gold_inputs
        if packed and self.mode not in PACKED_MODES:
            raise ValueError(f"teacher_forcing.mode={self.mode!r} does not train on packed rows; "
                             f"scheduled sampling packs in {list(PACKED_MODES)}")
        if mask is None:
            positions = None if segments is None else segments["positions"]
            mask = self.mask(step_rng, step, gold_inputs.shape, positions)
        _, choice_key = forcing_keys(step_rng)
        logits, read_tokens = self.unroll(model)(
            model, variables, encoded, gold_inputs, mask, choice_key,
            choice=self.choice, temperature=self.temperature, train=True, rng=dropout_rng,
            **packed,
        )
        return logits, mask, read_tokens


def gold_counts_by_position(
    mask: Array, weights: Array, length: int, positions: Array | None = None
) -> tuple[Array, Array]:
    """(gold reads, real tokens) per position, float32 [length] each, from a mask and token
    weights [batch, tgt_len <= length]; zero-padded to `length` so that every length bucket
    gives one shape. Their ratio over a log interval is the realised gold rate by position.
    Packed rows: counted by each example's own decoder position, `positions` [batch, tgt_len]."""
    if positions is not None:
        gold = jnp.zeros(length, jnp.float32).at[positions].add(mask * weights)
        return gold, jnp.zeros(length, jnp.float32).at[positions].add(weights)
    pad = ((0, length - mask.shape[1]),)
    gold = jnp.pad((mask * weights).sum(0), pad)
    return gold.astype(jnp.float32), jnp.pad(weights.sum(0), pad).astype(jnp.float32)


def check_config(config: ml_collections.ConfigDict) -> None:
    """`config.teacher_forcing`: its choices, a schedule that never increases, and what it
    excludes: scheduled sampling with BatchNorm, packed rows in a scanning mode."""
    for key, allowed in (("schedule", SCHEDULES), ("mode", MODES),
                         ("position_schedule", POSITION_SCHEDULES), ("position_combine", COMBINES)):
        config_checks.one_of(config, f"teacher_forcing.{key}", allowed)
    tf = config.teacher_forcing
    if tf.choice in LATER_CHOICES:
        raise ConfigError(
            f"config.teacher_forcing.choice={tf.choice!r}: not implemented yet (a later variant: "
            f"the model seam feeds tokens, not embeddings); use one of {list(CHOICES)}"
        )
    config_checks.one_of(config, "teacher_forcing.choice", CHOICES)
    if tf.temperature <= 0:
        raise ConfigError(f"config.teacher_forcing.temperature={tf.temperature}: must be > 0")
    check_schedules(tf)
    if always_gold(tf):
        return
    described = (f"config.teacher_forcing.schedule={tf.schedule!r}, p={tf.p}, "
                 f"position_schedule={tf.position_schedule!r}")
    if config.model.norm == "batch":
        # BatchNorm needs batch x time statistics, which exist only on the fully teacher-forced
        # path; a decoder unrolled step by step on its own tokens has none (see models/norms.py).
        raise ConfigError(
            "config.model.norm='batch' trains only with full teacher forcing "
            "(config.teacher_forcing.schedule='constant', p=1.0, position_schedule='none'): "
            f"scheduled sampling ({described}) unrolls the decoder step by step, where BatchNorm "
            "has no batch x time statistics"
        )
    if config.pack and tf.mode not in PACKED_MODES:
        raise ConfigError(
            f"config.pack=True with scheduled sampling ({described}) in "
            f"config.teacher_forcing.mode={tf.mode!r}: packed rows train with full teacher "
            f"forcing or mode in {list(PACKED_MODES)} (the exact mode scans the decoder "
            "step, whose state would carry across the examples of a row)"
        )


