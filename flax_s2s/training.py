"""Train state, the jitted train and eval steps, and the training loop `run(config, workdir)`."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from flax_s2s import (
    decoding,
    early_stopping,
    metrics,
    pretrained,
    reference_eval,
    resume,
    sharding,
    warm_start,
    workdir_lock,
)
from flax_s2s.checkpoint import CONFIG_KEYS, Checkpointer, newest_checkpoint
from flax_s2s.config_validation import validate_config
from flax_s2s.data import packing, pipeline
from flax_s2s.data.task_data import TaskData, load_task_data
from flax_s2s.data.vocab import Vocab, model_special_tokens
from flax_s2s.early_stopping import EarlyStopping
from flax_s2s.errors import ConfigError, DiskFullError, is_disk_full
from flax_s2s.forcing import TeacherForcing, gold_counts_by_position
from flax_s2s.logs import MetricsWriter, Progress
from flax_s2s.models import Seq2Seq, build_model, decoder_inputs
from flax_s2s.signals import GracefulStop

Array = jax.Array


@flax.struct.dataclass
class TrainState:
    """Everything the next train step depends on (with the data position, saved beside it).

    `rng` stays fixed; each step derives its own keys as fold_in(rng, step), so no key is reused
    and a resumed run draws what an uninterrupted one would. `batch_stats` holds BatchNorm's
    running statistics ({} for models without BatchNorm). `ema_params` is the exponential moving
    average of `params` (`config.ema_decay` > 0; the same tree and shardings), {} when off: a
    checkpoint of a run without it holds no such field, and restores as before
    (`Checkpointer.restore`).
    """

    step: Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: Array
    ema_params: Any = flax.struct.field(default_factory=dict)

    @property
    def variables(self) -> dict[str, Any]:
        """The raw (trained) variables."""
        return {"params": self.params, "batch_stats": self.batch_stats}

    def eval_variables(self, use_ema: bool = True) -> dict[str, Any]:
        """The variables to evaluate and decode with: the average of the parameters where the
        state keeps one and `use_ema`, else the raw ones. BatchNorm statistics are the raw
        parameters' running averages either way (the average has none of its own)."""
        params = self.ema_params if use_ema and self.ema_params else self.params
        return {"params": params, "batch_stats": self.batch_stats}


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """adamw with linear warmup, cosine decay to end_lr_factor * peak, global-norm clipping."""
    opt = config.optimizer
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=opt.learning_rate,
        warmup_steps=opt.warmup_steps,
        decay_steps=max(config.num_train_steps, opt.warmup_steps + 1),
        end_value=opt.learning_rate * opt.end_lr_factor,
    )
    return optax.chain(
        optax.clip_by_global_norm(opt.grad_clip_norm),
        optax.adamw(schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay),
    )


def _state_initializer(
    model: Seq2Seq, tx: optax.GradientTransformation, seed: int, batch: dict[str, np.ndarray],
    ema: bool = False,
) -> Callable[[], TrainState]:
    """A traceable () -> TrainState. Initialisation reads only the batch's shapes, so it needs
    no data on the devices and gives the same parameters whatever the batch size or mesh. With
    `ema`, the average of the parameters starts at the parameters themselves."""
    src_shape, tgt_shape = batch["src_tokens"].shape, batch["tgt_tokens"].shape

    def init(variables: dict[str, Any] | None = None) -> TrainState:
        """`variables` (a warm start) replace the seeded initialisation; the rest is fresh."""
        init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
        if variables is None:
            variables = model.init(init_rng, jnp.ones(src_shape, jnp.int32),
                                   jnp.ones(tgt_shape, jnp.int32))
        params = variables["params"]
        # int32, not weak-typed: the same type as a restored step, so resuming reuses the compile
        step = jnp.zeros((), jnp.int32)
        return TrainState(
            step=step,
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(params),
            rng=train_rng,
            # `+ 0` makes the average its own buffer, never an alias of the parameters (a warm
            # start's are inputs here), so that the train step can donate both
            ema_params=jax.tree.map(lambda p: p + 0, params) if ema else {},
        )

    return init


def create_train_state(
    model: Seq2Seq,
    tx: optax.GradientTransformation,
    seed: int,
    batch: dict[str, np.ndarray],
    shardings: TrainState | None = None,
    variables: dict[str, Any] | None = None,
    ema: bool = False,
) -> TrainState:
    """A fresh train state; with `shardings` (`sharding.train_state_shardings`) every array is
    created directly in its place on the mesh, never whole on one device. `variables`
    ({"params", "batch_stats"}, e.g. of a warm start) are taken instead of initialising them;
    optimizer state, step and key are fresh either way. `ema`: keep an average of the
    parameters (`config.ema_decay` > 0), starting at them."""
    init = jax.jit(_state_initializer(model, tx, seed, batch, ema), out_shardings=shardings)
    if variables is None:
        return init()
    if shardings is not None:
        variables = jax.tree.map(_place, variables, shardings.variables)
    return init(variables)


def _place(value: Any, where: jax.sharding.Sharding) -> Array:
    """A host value as a global array: each process fills only the shards its devices hold."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, where, lambda index: value[index])


def abstract_train_state(
    model: Seq2Seq, tx: optax.GradientTransformation, seed: int, batch: dict[str, np.ndarray],
    ema: bool = False,
) -> TrainState:
    """The train state's shapes and dtypes (ShapeDtypeStructs), computed without allocating."""
    return jax.eval_shape(_state_initializer(model, tx, seed, batch, ema))


def make_train_step(
    model: Seq2Seq,
    tx: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
    forcing: TeacherForcing | None = None,
    data_shards: int = 1,
):
    """(state, batch) -> (state, metrics); jit it once and reuse it.

    The decoder reads gold or own tokens as `forcing` says (default: built from
    `config.teacher_forcing`; see flax_s2s.forcing). Under scheduled sampling the metrics also
    hold `gold_by_position` and `tokens_by_position`, [max_tgt_len] counts of this step's gold
    reads and real tokens (`_summarize` turns them into `gold_rate_by_position`).

    With `config.grad_accum_steps` = K > 1 the batch is split into K microbatches
    (`split_microbatches`; `data_shards` is the mesh's `data` axis, so that each device keeps its
    rows) and `accumulated_gradients` scans them: the step's loss and gradient are the whole
    batch's, with the memory of one microbatch. With `config.ema_decay` > 0 the state's
    `ema_params` (see `create_train_state(..., ema=True)`) moves towards the new parameters.
    """
    forcing = forcing or TeacherForcing.from_config(config.teacher_forcing)
    batch_sums = make_batch_sums(model, forcing, config)

    def loss_fn(params, batch_stats, batch, rng, step):
        loss_sum, (counts, batch_stats) = batch_sums(params, batch_stats, batch, rng, step)
        return loss_sum / jnp.maximum(counts["tokens"], 1.0), (counts, batch_stats)

    def train_step(state: TrainState, batch: dict[str, Array]):
        step_rng = jax.random.fold_in(state.rng, state.step)
        if config.grad_accum_steps == 1:
            grad_fn = jax.value_and_grad(_with_fault_injection(loss_fn, config, state.step),
                                         has_aux=True)
            (loss, (counts, batch_stats)), grads = grad_fn(
                state.params, state.batch_stats, batch, step_rng, state.step
            )
        else:
            loss, (counts, batch_stats), grads = accumulated_gradients(
                batch_sums, forcing, state.params, state.batch_stats, batch, step_rng,
                state.step, config.grad_accum_steps, data_shards,
            )
            loss = _poison(loss, config, state.step)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = _moved_average(state, params, config.ema_decay)
        # A non-finite loss or gradient skips the update (params, statistics, optimizer state and
        # average are kept); the loop counts these steps and, under nonfinite_policy="stop", ends
        # the run.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        params, opt_state, batch_stats, ema_params = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old),
            (params, opt_state, batch_stats, ema_params),
            (state.params, state.opt_state, state.batch_stats, state.ema_params),
        )
        step_metrics = {"loss": loss, "grad_norm": grad_norm, **_token_metrics(counts),
                        "nonfinite_steps": 1 - finite.astype(jnp.int32)}
        step_metrics["teacher_forcing_prob"] = forcing.prob(state.step)
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
            ema_params=ema_params,
        )
        return new_state, step_metrics

    return train_step


def make_batch_sums(model: Seq2Seq, forcing: TeacherForcing, config: ml_collections.ConfigDict):
    """(params, batch_stats, batch, rng, step, mask=None) -> (loss_sum, (counts, batch_stats)):
    the token-summed loss of a batch or microbatch, and its sums: `tokens` (non-pad targets),
    `correct` and, under scheduled sampling, `gold_by_position` / `tokens_by_position`
    [max_tgt_len]. `mask` [batch, tgt_len]: the rows of the teacher-forcing mask to read by
    (default: drawn from `rng` for this batch, as `TeacherForcing.train_logits` does).

    A packed batch (`flax_s2s.data.packing`: segment ids and positions beside the tokens) is
    encoded and decoded per example; its sums count real tokens as an unpacked batch's do."""

    def batch_sums(params, batch_stats, batch, rng, step, mask=None):
        tgt_tokens = batch["tgt_tokens"]
        src_segments, tgt_segments = packing.segments(batch, "src"), packing.segments(batch, "tgt")
        encode_rng, decode_rng = jax.random.split(rng)
        # update_stats: BatchNorm models also return their moved running statistics ({} else).
        encoded, batch_stats = model.encode(
            {"params": params, "batch_stats": batch_stats}, batch["src_tokens"],
            train=True, rng=encode_rng, update_stats=True, segments=src_segments,
        )
        variables = {"params": params, "batch_stats": batch_stats}
        weights = metrics.token_weights(tgt_tokens, pad=model.special_tokens.pad)
        counts = {}
        if forcing.always_gold:  # the parallel teacher-forced path; no scan is compiled
            segment_ids = None if tgt_segments is None else tgt_segments["segment_ids"]
            logits, batch_stats = model.forward(
                variables, encoded,
                decoder_inputs(tgt_tokens, model.special_tokens.bos, segment_ids),
                train=True, rng=decode_rng, update_stats=True, segments=tgt_segments,
            )
        else:  # scheduled sampling (config validation refuses it for BatchNorm models)
            logits, mask = forcing.train_logits(
                model, variables, encoded, tgt_tokens, step=step, step_rng=rng,
                dropout_rng=decode_rng, mask=mask, segments=tgt_segments,
            )
            positions = None if tgt_segments is None else tgt_segments["positions"]
            counts["gold_by_position"], counts["tokens_by_position"] = gold_counts_by_position(
                mask, weights, config.max_tgt_len, positions  # one shape for every length bucket
            )
        loss_sum = metrics.cross_entropy_sum(logits, tgt_tokens, weights, config.label_smoothing)
        counts["correct"] = metrics.correct_tokens(logits.argmax(-1), tgt_tokens, weights)
        counts["tokens"] = weights.sum()
        return loss_sum, (counts, batch_stats)

    return batch_sums


def _token_metrics(counts: dict[str, Array]) -> dict[str, Array]:
    """A step's metrics from its sums: token accuracy, and the by-position counts as they are."""
    by_position = {k: v for k, v in counts.items() if k not in ("correct", "tokens")}
    return {**by_position, "token_accuracy": counts["correct"] / jnp.maximum(counts["tokens"], 1.0)}


def split_microbatches(batch: Any, num_microbatches: int, data_shards: int = 1) -> Any:
    """Arrays [batch, ...] -> [num_microbatches, batch / num_microbatches, ...].

    The batch dimension is split over the mesh's `data` axis in `data_shards` blocks of
    consecutive rows; microbatch i takes the i-th of `num_microbatches` equal slices of each
    block, so that every device computes on its own rows and nothing moves between devices. Any
    split gives the same sums; this one keeps each device's share.
    """

    def split(x: Array) -> Array:
        rows = x.shape[0] // (data_shards * num_microbatches)
        x = x.reshape(data_shards, num_microbatches, rows, *x.shape[1:]).swapaxes(0, 1)
        return x.reshape(num_microbatches, data_shards * rows, *x.shape[3:])

    return jax.tree.map(split, batch)


def accumulated_gradients(
    batch_sums: Callable[..., Any],
    forcing: TeacherForcing,
    params: Any,
    batch_stats: Any,
    batch: dict[str, Array],
    step_rng: Array,
    step: Array,
    num_microbatches: int,
    data_shards: int = 1,
) -> tuple[Array, tuple[dict[str, Array], Any], Any]:
    """(loss, (counts, batch_stats), grads) of the whole batch from `num_microbatches`
    microbatches scanned with `lax.scan` (the activations of one microbatch at a time).

    The token-summed losses, counts and gradients of the microbatches are summed and divided
    once by the whole batch's non-pad target tokens, so the loss and gradient are the whole
    batch's (to float rounding), however unevenly the tokens fall between microbatches.
    - Teacher forcing: the mask is drawn once for the whole batch, from `step_rng` as one batch
      would draw it, and each microbatch reads its rows of it. Dropout and sampled own tokens
      (`choice="sample"`) draw from fold_in(step_rng, i) in microbatch i: the same
      distribution as one batch, other draws.
    - BatchNorm: each microbatch normalises by its own statistics (so a BatchNorm model's
      gradient is not the whole batch's) and moves the running averages from the step's
      starting values; the new averages are the mean of the microbatches' (one update a step,
      towards the mean of the microbatch statistics).
    """
    mask = None
    if not forcing.always_gold:
        tgt_segments = packing.segments(batch, "tgt")
        positions = None if tgt_segments is None else tgt_segments["positions"]
        mask = forcing.mask(step_rng, step, batch["tgt_tokens"].shape, positions)
    microbatches = split_microbatches(
        {"batch": batch, "mask": mask}, num_microbatches, data_shards
    )
    microbatches["index"] = jnp.arange(num_microbatches)
    grad_fn = jax.value_and_grad(batch_sums, has_aux=True)

    def one(inputs):
        (loss_sum, (counts, stats)), grads = grad_fn(
            params, batch_stats, inputs["batch"], jax.random.fold_in(step_rng, inputs["index"]),
            step, inputs["mask"],
        )
        return loss_sum, counts, stats, grads

    def body(totals, inputs):
        return jax.tree.map(jnp.add, totals, one(inputs)), None

    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                         jax.eval_shape(one, jax.tree.map(lambda x: x[0], microbatches)))
    (loss_sum, counts, stats_sum, grad_sum), _ = jax.lax.scan(body, zeros, microbatches)
    num_tokens = jnp.maximum(counts["tokens"], 1.0)
    grads = jax.tree.map(lambda g: g / num_tokens, grad_sum)
    new_stats = jax.tree.map(lambda s: s / num_microbatches, stats_sum)
    return loss_sum / num_tokens, (counts, new_stats), grads


def _moved_average(state: TrainState, params: Any, decay: float) -> Any:
    """The average of the parameters after this step: decay * average + (1 - decay) * params.

    A pytree in the train state, updated here with `optax.incremental_update` (Polyak
    averaging), rather than `optax.ema`: that transformation averages the updates it is fed, not
    the parameters, and starts from zeros (needing a debiasing the stored average lacks). This
    average starts at the initial parameters instead. {} when `decay` is 0."""
    if decay <= 0:
        return state.ema_params
    if not state.ema_params:
        raise ValueError("config.ema_decay > 0, but the train state keeps no average of the "
                         "parameters: create it with create_train_state(..., ema=True)")
    return optax.incremental_update(params, state.ema_params, 1.0 - decay)


def _poison(loss: Array, config: ml_collections.ConfigDict, step: Array) -> Array:
    """The loss, NaN at `config.debug_nonfinite_step` (for testing the non-finite guard)."""
    if config.debug_nonfinite_step < 0:
        return loss
    return jnp.where(step == config.debug_nonfinite_step, jnp.nan, loss)


def _with_fault_injection(loss_fn, config: ml_collections.ConfigDict, step: Array):
    """`loss_fn` with its loss poisoned by `_poison`."""
    if config.debug_nonfinite_step < 0:
        return loss_fn

    def poisoned(*args):
        loss, aux = loss_fn(*args)
        return _poison(loss, config, step), aux

    return poisoned


def make_eval_step(model: Seq2Seq):
    """(variables, batch) -> sums for teacher-forced and free-running metrics, in total and by
    target position (the exposure-bias gap). The free-running outputs come decoded in
    `batch["predicted_tokens"]` [batch, tgt_len] (`Evaluator.decode`), so that one decode of a
    split serves these metrics and the text metrics alike."""

    def eval_step(variables, batch):
        tgt_tokens, example_weights = batch["tgt_tokens"], batch["weights"]
        predicted = batch["predicted_tokens"]
        weights = metrics.token_weights(tgt_tokens, example_weights, pad=model.special_tokens.pad)
        encoded = model.encode(variables, batch["src_tokens"])
        logits = model.forward(
            variables, encoded, decoder_inputs(tgt_tokens, model.special_tokens.bos)
        )
        tf_by_position, tokens_by_position = metrics.accuracy_by_position(
            logits.argmax(-1), tgt_tokens, weights
        )
        fr_by_position, _ = metrics.accuracy_by_position(predicted, tgt_tokens, weights)
        return {
            "tf_correct_by_position": tf_by_position,
            "fr_correct_by_position": fr_by_position,
            "tokens_by_position": tokens_by_position,
            "loss_sum": metrics.cross_entropy_sum(logits, tgt_tokens, weights),
            "tf_correct": metrics.correct_tokens(logits.argmax(-1), tgt_tokens, weights),
            "fr_correct": metrics.correct_tokens(predicted, tgt_tokens, weights),
            "exact": metrics.exact_matches(predicted, tgt_tokens, example_weights),
            "tokens": weights.sum(),
            "examples": example_weights.sum(),
        }

    return eval_step


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """The two jitted halves of evaluating a split; both take numpy batches.

    decode: (variables, src_tokens [batch, src_len]) -> the one output per source that free
      running scores, tokens [batch, max_tgt_len]: greedy (eval_beam_size 0) or the best beam.
    score: (variables, batch with "predicted_tokens") -> metric sums (`make_eval_step`).
    """

    decode: Callable[..., Any]
    score: Callable[..., Any]


def make_evaluator(
    model: Seq2Seq, config: ml_collections.ConfigDict, mesh: Mesh | None = None,
    variables_shardings: Any = None,
) -> Evaluator:
    """An `Evaluator` decoding as `config.eval_beam_size` / `eval_length_alpha` say; on `mesh`,
    each batch is split over its `data` axis and the results are replicated."""
    decode = functools.partial(
        decoding.best_sequences, model, max_len=config.max_tgt_len,
        beam_size=config.eval_beam_size, alpha=config.eval_length_alpha,
    )
    score = make_eval_step(model)
    if mesh is None:
        return Evaluator(decode=jax.jit(decode), score=jax.jit(score))
    batch_sharding, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    in_shardings = (variables_shardings, batch_sharding)
    decode = jax.jit(decode, in_shardings=in_shardings, out_shardings=replicated)
    score = jax.jit(score, in_shardings=in_shardings, out_shardings=replicated)

    def decode_placed(variables, src_tokens):
        placed = sharding.global_batch_from_full({"src_tokens": src_tokens}, batch_sharding)
        return decode(variables, placed["src_tokens"])

    def score_placed(variables, batch):
        return score(variables, sharding.global_batch_from_full(batch, batch_sharding))

    return Evaluator(decode=decode_placed, score=score_placed)


@dataclasses.dataclass(frozen=True)
class Steps:
    """A run's jitted functions over a mesh. Each takes numpy batches and places them as global
    arrays split over the mesh's `data` axis.

    train: (state, this process's rows of a batch) -> (state, metrics); the state is donated.
    evaluator: decoding and scoring of whole eval batches (replicated results).
    """

    train: Callable[..., Any]
    evaluator: Evaluator


def jit_steps(
    model: Seq2Seq,
    tx: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    state_shardings: TrainState,
    forcing: TeacherForcing | None = None,
) -> Steps:
    """Compiles (lazily) the train step and the evaluator with explicit in/out shardings."""
    batch_sharding, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    train = jax.jit(
        make_train_step(model, tx, config, forcing, data_shards=mesh.shape[sharding.DATA]),
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )

    def train_step(state, local_batch):
        return train(state, sharding.global_batch(local_batch, batch_sharding, config.batch_size))

    evaluator = make_evaluator(model, config, mesh, state_shardings.variables)
    return Steps(train=train_step, evaluator=evaluator)


def evaluate(
    evaluator: Evaluator,
    variables: Any,
    examples: pipeline.Examples,
    batch_size: int,
    text_metrics: Sequence[str] = (),
    tgt_vocab: Vocab | None = None,
    grouped: pipeline.GroupedReferences | None = None,
) -> dict[str, Any]:
    """Teacher-forced loss/accuracy and free-running token accuracy/exact match over a split, both
    accuracies by target position (None where no example has a token), plus the `text_metrics`
    (WER/PER, BLEU/chrF; need `tgt_vocab`) of each unique source's output against all of its
    references.

    Each unique source is decoded once (`grouped`, default: grouped from `examples`), and those
    outputs serve every metric: an example's free-running output is its source's.
    """
    grouped = pipeline.group_references(examples) if grouped is None else grouped
    outputs = reference_eval.decode_sources(
        functools.partial(evaluator.decode, variables), grouped.src, batch_size
    )
    predicted = outputs[grouped.source_index]
    totals: dict[str, Any] = {}
    for batch in pipeline.eval_batches(examples, batch_size, predicted):
        for key, value in jax.device_get(evaluator.score(variables, batch)).items():
            totals[key] = totals.get(key, 0.0) + np.asarray(value, np.float64)
    tokens, examples_count = max(totals["tokens"], 1.0), max(totals["examples"], 1.0)
    counted = totals["tokens_by_position"]

    def by_position(correct: np.ndarray) -> list[float | None]:
        return [float(c / n) if n > 0 else None for c, n in zip(correct, counted, strict=True)]

    result = {
        "loss": float(totals["loss_sum"] / tokens),
        "token_accuracy": float(totals["tf_correct"] / tokens),
        "fr_token_accuracy": float(totals["fr_correct"] / tokens),
        "exact_match": float(totals["exact"] / examples_count),
        "tf_accuracy_by_position": by_position(totals["tf_correct_by_position"]),
        "fr_accuracy_by_position": by_position(totals["fr_correct_by_position"]),
    }
    if text_metrics:
        result.update(reference_eval.score_outputs(outputs, grouped, tgt_vocab, text_metrics))
    return result


class NonFiniteError(RuntimeError):
    """Training met a non-finite loss or gradient under nonfinite_policy="stop"."""


_COUNTS_BY_POSITION = ("gold_by_position", "tokens_by_position")


def _summarize(history: list[dict[str, Array]]) -> dict[str, Any]:
    """Means over a log interval; `nonfinite_steps` is a count; under scheduled sampling,
    `gold_rate_by_position` is the share of real tokens read gold at each decoder position over
    the interval (None where no token was). One host sync per interval."""
    stacked = jax.device_get(history)
    scalars = [k for k in stacked[0] if k not in _COUNTS_BY_POSITION]
    summary: dict[str, Any] = {k: float(np.mean([h[k] for h in stacked])) for k in scalars}
    summary["nonfinite_steps"] = int(sum(h["nonfinite_steps"] for h in stacked))
    if "gold_by_position" in stacked[0]:
        gold, tokens = (np.sum([h[k] for h in stacked], axis=0) for k in _COUNTS_BY_POSITION)
        summary["gold_rate_by_position"] = [
            float(g / n) if n > 0 else None for g, n in zip(gold, tokens, strict=True)
        ]
    return summary


def _params_finite(params: Any) -> bool:
    return bool(jax.tree.reduce(lambda ok, x: ok & jnp.isfinite(x).all(), params, jnp.asarray(True)))


def _load_data(
    config: ml_collections.ConfigDict, workdir: str, splits: Sequence[str], warm_start_from: str = ""
) -> TaskData:
    """The task data of `splits`; with several processes, process 0 prepares it and writes the
    vocabularies first, and the others read them after (no two processes write the same files).
    `warm_start_from`: a workdir whose vocabularies are copied in first (see warm_start.py)."""

    def load() -> TaskData:
        if warm_start_from:
            warm_start.copy_vocabularies(warm_start_from, workdir)
        return load_task_data(config, workdir, splits)

    if jax.process_count() == 1:
        return load()
    data = load() if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices("flax_s2s: task data prepared")
    return data if data is not None else load_task_data(config, workdir, splits)


@dataclasses.dataclass
class _Setup:
    """What a run trains with, from `_setup`."""

    data: TaskData
    model: Seq2Seq
    tx: optax.GradientTransformation
    state: TrainState
    state_shardings: TrainState
    data_iterator: Any
    checkpointer: Checkpointer
    state_template: TrainState  # ShapeDtypeStructs on the mesh: what a checkpoint restores into
    early_stopping: EarlyStopping  # with the restored run's eval history


def _setup(
    config: ml_collections.ConfigDict, workdir: str, mesh: Mesh, eval_splits: Sequence[str]
) -> _Setup:
    """Data, model, optimizer, the state's shardings on `mesh`, and the train state: restored
    from the newest readable checkpoint (onto this mesh, whichever mesh saved it) or fresh,
    with the variables of `config.init_from` when it names a workdir to warm-start from, or of
    `config.pretrained` when it names a checkpoint to fine-tune."""
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"), config.max_checkpoints, config.keep_best,
        config.best_mode,
    )
    resuming = bool(checkpointer.all_steps())
    if resuming:  # before any data is read: a run this config cannot continue fails at once
        _check_resume(config, workdir, checkpointer)
    warm_start_from = "" if resuming else config.init_from
    data = _load_data(config, workdir, ("train", *eval_splits), warm_start_from)
    model = build_model(config, len(data.src_vocab), len(data.tgt_vocab),
                        model_special_tokens(data.src_vocab, data.tgt_vocab))
    tx = make_optimizer(config)
    # This process reads only its rows of each global batch, the rows its devices hold.
    process_index, process_count = sharding.process_batch_rows(mesh, config.batch_size)
    train_data = pipeline.train_dataset(
        data.splits["train"], config.batch_size, config.seed, process_index, process_count,
        bucket_boundaries=tuple(config.bucket_boundaries), pack=config.pack,
    )
    data_iterator = pipeline.train_iterator(train_data)
    shapes = pipeline.first_batch(train_data)  # what the parameters are initialised for
    ema = config.ema_decay > 0
    abstract_state = abstract_train_state(model, tx, config.seed, shapes, ema)
    state_shardings = sharding.train_state_shardings(abstract_state, tx, mesh, config.fsdp)
    template = sharding.with_shardings(abstract_state, state_shardings)
    history = None
    if resuming:
        state = checkpointer.restore(template, data_iterator)
        history = checkpointer.restore_extra(early_stopping.CHECKPOINT_ITEM, checkpointer.restored_step)
        _print(f"resumed from {checkpointer.directory} at step {int(state.step)}")
    elif warm_start_from:
        variables = _warm_start_variables(config, warm_start_from, abstract_state, workdir)
        state = create_train_state(model, tx, config.seed, shapes, state_shardings, variables,
                                   ema)
    elif config.pretrained:
        variables = {"batch_stats": {}, **pretrained.load_variables(config.pretrained, model.module)}
        _print(f"fine-tuning {config.model.type} from {config.pretrained}: its weights, a fresh "
               "optimizer, step 0")
        state = create_train_state(model, tx, config.seed, shapes, state_shardings, variables,
                                   ema)
    else:
        state = create_train_state(model, tx, config.seed, shapes, state_shardings, ema=ema)
    return _Setup(data, model, tx, state, state_shardings, data_iterator, checkpointer, template,
                  EarlyStopping.from_config(config, history))


def _check_resume(
    config: ml_collections.ConfigDict, workdir: str, checkpointer: Checkpointer
) -> None:
    """Refuses a config that changes what the saved run's state depends on (see
    `flax_s2s.resume`); lists in the log the changes it takes."""
    # A damaged saved config names itself (FileFormatError): without it nothing can be checked.
    saved = checkpointer.restore_config(required=CONFIG_KEYS)
    accepted = resume.check_resume(saved, json.loads(config.to_json()), workdir)
    if accepted:
        _print("resuming with changed settings (saved -> this run): " + ", ".join(accepted))


def _warm_start_variables(
    config: ml_collections.ConfigDict, source: str, abstract_state: TrainState, workdir: str
) -> dict[str, Any]:
    """The variables of `source`'s checkpoint, checked against this run's model; says in the log
    where they come from and which model fields differ from the source's."""
    variables, source_step = warm_start.load_variables(
        source, config.init_from_step, abstract_state.variables, workdir
    )
    _print(f"warm start from {source} (checkpoint {source_step}): its parameters, a fresh "
           "optimizer, step 0")
    if jax.process_index() == 0:
        changed = warm_start.model_differences(source, source_step, config.model.to_dict())
        if changed:
            _print("warm start: model fields that differ from the source's (source -> this "
                   "run): " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    return variables


def _print(message: str) -> None:
    """A line in the log, from process 0 only."""
    if jax.process_index() == 0:
        print(message, flush=True)


def final_eval_splits(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The splits the final evaluation covers: the periodic evals' `eval_splits`, then
    `final_eval_split`."""
    return tuple(dict.fromkeys((*config.eval_splits, config.final_eval_split)))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming from its newest readable checkpoint), evaluates on
    the final eval split, and returns {"step", "final": metrics, "wall_time_s", "stopped_by"}.

    SIGTERM/SIGINT end the run early after saving a checkpoint (`stopped_by` names the signal,
    and no final evaluation runs). Non-finite steps skip their update; under
    nonfinite_policy="stop" the run raises NonFiniteError at the next log or checkpoint step,
    without saving, so the last good checkpoint stays the newest. Early stopping
    (`config.early_stopping.patience` > 0, see `flax_s2s.early_stopping`) ends the run after a
    checkpoint, `stopped_by` "early_stopping", and the final evaluation is that of the best kept
    checkpoint (each final record names it as `checkpoint_step`).

    Evals use the average of the parameters where the run keeps one (`config.ema_decay` > 0)
    and `config.eval_with_ema`, else the raw parameters.

    A full disk (ENOSPC) ends the run with DiskFullError naming the newest checkpoint saved whole
    (a checkpoint cut short is removed); run again with space to resume from it.

    One trainer per workdir: process 0 holds `WORKDIR/trainer.lock` for the run (see
    `flax_s2s.workdir_lock`), and a second trainer there fails at once, naming the first.
    """
    start_time = time.time()
    pretrained.configure(config)
    validate_config(config, jax.device_count())
    lock = workdir_lock.acquire(workdir) if jax.process_index() == 0 else None
    try:
        return _train(config, workdir, start_time)
    except OSError as error:  # a checkpoint's own ENOSPC is a DiskFullError already
        if not is_disk_full(error):
            raise
        checkpoints = newest_checkpoint(os.path.join(workdir, "checkpoints"))
        raise DiskFullError(f"the disk is full (ENOSPC, no space left on device) writing in "
                            f"{workdir} ({error}); {checkpoints}. Free space (or copy the workdir "
                            "where there is some) and run again to resume from it") from None
    finally:
        if lock is not None:
            workdir_lock.release(lock)


def _train(config: ml_collections.ConfigDict, workdir: str, start_time: float) -> dict[str, Any]:
    """`run` once the config is valid and the workdir this run's."""
    mesh = sharding.make_mesh(config.mesh_shape)
    os.makedirs(workdir, exist_ok=True)
    final_splits = final_eval_splits(config)
    setup = _setup(config, workdir, mesh, final_splits)
    data, checkpointer, data_iterator = setup.data, setup.checkpointer, setup.data_iterator
    state, stopping = setup.state, setup.early_stopping
    config_dict = json.loads(config.to_json())
    forcing = TeacherForcing.from_config(config.teacher_forcing)
    steps = jit_steps(setup.model, setup.tx, config, mesh, setup.state_shardings, forcing)
    grouped = {split: pipeline.group_references(data.splits[split]) for split in final_splits}
    # Every process runs the same loop (each step is one program over all devices); only
    # process 0 prints and writes metrics. Checkpoints are written by all processes together.
    is_main = jax.process_index() == 0
    writer = MetricsWriter(workdir, enabled=is_main, resume_step=int(state.step),
                           start_time=start_time)
    best_split, best_name = config.best_metric.split("/")

    def evaluate_split(step: int, split: str, label: str, evaluated: TrainState,
                       **extra: Any) -> dict[str, Any]:
        """Evaluates `evaluated` on `split`, writes the record (with `extra`) and prints
        `label: ...`."""
        result = evaluate(steps.evaluator, evaluated.eval_variables(config.eval_with_ema),
                          data.splits[split], config.eval_batch_size, config.text_metrics,
                          data.tgt_vocab, grouped[split])
        result["teacher_forcing_prob"] = float(forcing.prob(step))
        result.update(extra)
        writer.write(step, split, result)
        progress.write(f"{label}: " + _format(result))
        return result

    def save(step: int, metric: float | None = None) -> None:
        if not _params_finite(state.params):
            raise NonFiniteError(f"step {step}: parameters are not finite; not saving them")
        checkpointer.save(step, state, data_iterator, config_dict, metric=metric,
                          extras={early_stopping.CHECKPOINT_ITEM: stopping.to_json()})

    step = int(state.step)
    progress = Progress(step, config.num_train_steps, enabled=is_main)
    history: list[dict[str, Array]] = []
    with GracefulStop() as stop:
        while step < config.num_train_steps and not stop.requested and not stopping.should_stop:
            state, step_metrics = steps.train(state, next(data_iterator))
            step += 1
            history.append(step_metrics)
            progress.update(step)
            last = step == config.num_train_steps
            is_eval = step % config.eval_every == 0 and not last
            is_save = (step % config.checkpoint_every == 0 or last or stop.requested
                       or (is_eval and config.keep_best > 0))
            if step % config.log_every == 0 or last or is_save:
                logged = _summarize(history)
                history = []
                if logged["nonfinite_steps"] and config.nonfinite_policy == "stop":
                    raise NonFiniteError(
                        f"non-finite loss or gradient in {logged['nonfinite_steps']} step(s) up "
                        f"to step {step}; stopping (nonfinite_policy='stop'). The newest "
                        f"checkpoint in {checkpointer.directory} is the last good one."
                    )
                writer.write(step, "train", logged)
                progress.log(step, logged)
            metric = None
            if is_eval:
                for split in config.eval_splits:
                    result = evaluate_split(step, split, f"step {step} {split}", state)
                    metric = result.get(best_name) if split == best_split else metric
                _record_best_metric(stopping, step, metric, config)
            if is_save:
                save(step, metric)
    progress.close()
    save(step)  # a no-op when this step is saved already
    if stop.requested:
        checkpointer.close()
        writer.close()
        progress.write(f"stopped by {stop.signal_name} at step {step}; checkpoint saved in "
                       f"{checkpointer.directory}/{step}")
        return {"step": step, "final": {}, "wall_time_s": time.time() - start_time,
                "stopped_by": stop.signal_name}

    evaluated, extra, stopped_by = state, {}, None
    if stopping.should_stop:
        best_step = stopping.best_step(checkpointer.all_steps())
        progress.write(_early_stopping_message(stopping, config, step, best_step))
        if best_step is not None:  # None: no kept checkpoint has an eval (keep_best is >= 1)
            evaluated = checkpointer.restore(setup.state_template, step=best_step, set_aside=False)
        extra = {"checkpoint_step": step if best_step is None else best_step}
        stopped_by = "early_stopping"
    checkpointer.close()
    final = {split: evaluate_split(step, split, f"final {split} (step {step})", evaluated, **extra)
             for split in final_splits}
    writer.close()
    wall_time = time.time() - start_time
    progress.write(f"wall time: {wall_time:.1f}s")
    return {"step": step, "final": final, "wall_time_s": wall_time, "stopped_by": stopped_by}


def _record_best_metric(
    stopping: EarlyStopping, step: int, metric: float | None, config: ml_collections.ConfigDict
) -> None:
    """Adds this eval's `config.best_metric` to the early-stopping history (always: a resume may
    turn early stopping on); under early stopping a metric the eval lacks is an error."""
    if metric is None:
        if stopping.patience > 0:
            raise ConfigError(f"config.best_metric={config.best_metric!r}: the eval at step "
                              f"{step} reports no such metric, so early stopping cannot read it")
        return
    stopping.record(step, metric)


def _early_stopping_message(
    stopping: EarlyStopping, config: ml_collections.ConfigDict, step: int, best_step: int | None
) -> str:
    """Why the run stopped, and which checkpoint the final evaluation reads."""
    return (f"early stopping at step {step}: {config.best_metric} has not improved by at least "
            f"{stopping.min_delta} in {stopping.evals_without_improvement()} evals "
            f"(config.early_stopping.patience={stopping.patience}); final evaluation on the best "
            f"kept checkpoint, step {best_step}")


def _format(result: dict[str, Any]) -> str:
    """The scalar metrics on one line (the by-position lists are in metrics.jsonl)."""
    return " ".join(f"{k}={v:.4f}" for k, v in result.items() if isinstance(v, float))


__all__ = [
    "Evaluator", "NonFiniteError", "Steps", "TrainState", "abstract_train_state",
    "create_train_state", "evaluate", "jit_steps", "make_eval_step", "make_evaluator",
    "make_optimizer", "make_train_step", "run",
]
