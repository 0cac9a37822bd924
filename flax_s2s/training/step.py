"""The train step: token-summed loss of a batch (teacher forced or scheduled sampling, packed or
not), gradient accumulation over microbatches, the optimizer update, the moving average of the
parameters, and the guard that skips a non-finite step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from flax_s2s import config_checks, input_noise, lora, metrics, mrt, oracle
from flax_s2s.data import packing
from flax_s2s.errors import ConfigError
from flax_s2s.forcing import TeacherForcing, gold_counts_by_position
from flax_s2s.models import Seq2Seq, decoder_inputs
from flax_s2s.training import distill, frozen
from flax_s2s.training.state import TrainState

Array = jax.Array
LORA_DROPOUT_STREAM = 0x10A  # folded into a step's key: LoRA's DropConnect mask
# (params, batch_stats, batch, rng, step, mask=None) -> (loss_sum, (counts, batch_stats))
BatchSums = Callable[..., Any]


def make_train_step(
    model: Seq2Seq,
    tx: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
    forcing: TeacherForcing | None = None,
    data_shards: int = 1,
    batch_sums: BatchSums | None = None,
    teachers: tuple[Seq2Seq, ...] = (),
) -> Callable[..., tuple[TrainState, dict[str, Array]]]:
    """(state, batch[, teacher_variables]) -> (state, metrics); jit it once and reuse it.

    The decoder reads gold or own tokens as `forcing` says (default: built from
    `config.teacher_forcing`; see flax_s2s.forcing). Under scheduled sampling the metrics also
    hold `gold_by_position` and `tokens_by_position`, [max_tgt_len] counts of this step's gold
    reads and real tokens (`_summarize` turns them into `gold_rate_by_position`).

    With `config.grad_accum_steps` = K > 1 the batch is split into K microbatches
    (`split_microbatches`; `data_shards` is the mesh's `data` axis, so that each device keeps its
    rows) and `accumulated_gradients` scans them: the step's loss and gradient are the whole
    batch's, with the memory of one microbatch. With `config.ema_decay` > 0 the state's
    `ema_params` (see `create_train_state(..., ema=True)`) moves towards the new parameters.

    `batch_sums` replaces the loss (default: `make_batch_sums(model, forcing, config)`); it
    must keep that function's signature and sums.

    `teachers` (token-level distillation, `flax_s2s.training.distill`): their models; the step
    then takes their variables (a tuple, one per teacher) as a third argument, frozen, and the
    loss mixes in the KL to them (`distill_kl` in the metrics: the per-token KL).

    Frozen parameters (`config.frozen`, LoRA's base: `flax_s2s.training.frozen`) are not
    differentiated and come out of the step unchanged; LoRA factors are merged into the weights
    the model reads (`flax_s2s.lora.merged`, with its DropConnect drawn from the step's key).
    """
    forcing = forcing or TeacherForcing.from_config(config.teacher_forcing)
    term = distill.make_distill_term(teachers, config.distill.temperature) if teachers else None
    batch_sums = batch_sums or make_batch_sums(model, forcing, config, term)
    lora_spec = lora.LoraSpec.from_config(config)
    lora_dropout = lora_spec.dropout if lora_spec else 0.0

    def trained_sums(fixed, lora_rng, teacher_variables):
        """`batch_sums` of the trained parameters, the `fixed` ones and LoRA merged in (and the
        teachers' variables, held constant)."""
        def sums(trained, *args):
            params = lora.merged(frozen.join(trained, fixed), lora_rng, lora_dropout)
            if teacher_variables is None:
                return batch_sums(params, *args)
            return batch_sums(params, *args, teachers=teacher_variables)
        return sums

    def train_step(state: TrainState, batch: dict[str, Array], teacher_variables=None):
        step_rng = jax.random.fold_in(state.rng, state.step)
        trained, fixed = frozen.split(state.params, config)
        if (teacher_variables is None) != (not teachers):
            raise ValueError(f"{len(teachers)} teacher model(s) but teacher variables "
                             f"{'missing' if teacher_variables is None else 'given'}")
        sums = trained_sums(fixed, jax.random.fold_in(step_rng, LORA_DROPOUT_STREAM),
                            teacher_variables)
        if config.grad_accum_steps == 1:
            grad_fn = jax.value_and_grad(_mean_loss(sums), has_aux=True)
            (loss, (counts, batch_stats)), grads = grad_fn(
                trained, state.batch_stats, batch, step_rng, state.step
            )
        else:
            loss, (counts, batch_stats), grads = accumulated_gradients(
                sums, forcing, trained, state.batch_stats, batch, step_rng,
                state.step, config.grad_accum_steps, data_shards,
            )
        grad_norm = optax.global_norm(grads)
        # A non-finite loss or gradient skips the update (params, statistics, optimizer state and
        # average are kept); the loop counts these steps and, under nonfinite_policy="stop", ends
        # the run. A cond, not a select of new against old: selecting needs the old state after
        # the new one is written into the donated buffers, so XLA copied every optimizer moment
        # at every step (bench/RESULTS.md, "the non-finite guard copied every optimizer moment").
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def updated(_):
            updates, opt_state = tx.update(frozen.full_gradient(grads, fixed), state.opt_state,
                                           state.params)
            # the frozen arrays go back as they were, not as p + 0
            params = frozen.join(
                frozen.split(optax.apply_updates(state.params, updates), config)[0], fixed)
            return params, opt_state, batch_stats, _moved_average(state, params,
                                                                  config.ema_decay)

        def kept(_):
            return state.params, state.opt_state, state.batch_stats, state.ema_params

        params, opt_state, batch_stats, ema_params = jax.lax.cond(finite, updated, kept, None)
        step_metrics = {"loss": loss, "grad_norm": grad_norm, **_token_metrics(counts),
                        "nonfinite_steps": 1 - finite.astype(jnp.int32)}
        step_metrics["teacher_forcing_prob"] = forcing.prob(state.step)
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
            ema_params=ema_params,
        )
        return new_state, step_metrics

    return train_step


def _mean_loss(batch_sums: BatchSums) -> Callable[..., Any]:
    """`batch_sums` as the loss a step differentiates: the mean over the batch's tokens."""

    def loss_fn(params, batch_stats, batch, rng, step):
        loss_sum, (counts, batch_stats) = batch_sums(params, batch_stats, batch, rng, step)
        return loss_sum / jnp.maximum(counts["tokens"], 1.0), (counts, batch_stats)

    return loss_fn


def make_batch_sums(model: Seq2Seq, forcing: TeacherForcing, config: ml_collections.ConfigDict,
                    distill_term: distill.DistillTerm | None = None):
    """(params, batch_stats, batch, rng, step, mask=None, teachers=()) ->
    (loss_sum, (counts, batch_stats)):
    the token-summed loss of a batch or microbatch, and its sums: `tokens` (non-pad targets),
    `correct` and, under scheduled sampling, `gold_by_position` / `tokens_by_position`
    [max_tgt_len]. `mask` [batch, tgt_len]: the rows of the teacher-forcing mask to read by
    (default: drawn from `rng` for this batch, as `TeacherForcing.train_logits` does).

    A packed batch (`flax_s2s.data.packing`: segment ids and positions beside the tokens) is
    encoded and decoded per example; its sums count real tokens as an unpacked batch's do.
    Under `teacher_forcing.oracle_targets` the loss and `correct` are against the oracle's
    targets (`flax_s2s.oracle`); `teacher_forcing.input_noise` perturbs the teacher-forced
    inputs (`flax_s2s.input_noise`). With `mrt.weight` = w > 0 the loss is (1 - w) times the
    token loss plus w times the token-weighted risk (`flax_s2s.mrt.risk_sum`), also in the sums
    as `mrt_risk`. With `distill_term` (teacher forcing only, no MRT), the loss mixes the KL to
    the teachers whose variables are `teachers` (`distill.mixed_loss`), and the sums hold
    `distill_kl`."""

    def batch_sums(params, batch_stats, batch, rng, step, mask=None, teachers=()):
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
        counts, targets = {}, tgt_tokens  # targets: the oracle's under oracle_targets
        if forcing.always_gold:  # the parallel teacher-forced path; no scan is compiled
            inputs = _teacher_inputs(model, config, tgt_tokens, tgt_segments, rng)
            logits, batch_stats = model.forward(
                variables, encoded, inputs,
                train=True, rng=decode_rng, update_stats=True, segments=tgt_segments,
            )
        else:  # scheduled sampling (config validation refuses it for BatchNorm models)
            logits, mask, read_tokens = forcing.train_unroll(
                model, variables, encoded, tgt_tokens, step=step, step_rng=rng,
                dropout_rng=decode_rng, mask=mask, segments=tgt_segments,
            )
            if config.teacher_forcing.get("oracle_targets", False):  # config refuses packing
                targets = oracle.oracle_targets(read_tokens, tgt_tokens, model.special_tokens.pad)
            positions = None if tgt_segments is None else tgt_segments["positions"]
            counts["gold_by_position"], counts["tokens_by_position"] = gold_counts_by_position(
                mask, weights, config.max_tgt_len, positions  # one shape for every length bucket
            )
        loss_sum = metrics.cross_entropy_sum(logits, targets, weights, config.label_smoothing)
        mrt_weight = config.get("mrt", {}).get("weight", 0.0)
        if mrt_weight > 0:  # config refuses packing and BatchNorm
            counts["mrt_risk"] = mrt.risk_sum(model, variables, encoded, batch, rng, config.mrt,
                                              config.max_tgt_len)
            loss_sum = (1.0 - mrt_weight) * loss_sum + mrt_weight * counts["mrt_risk"]
        if distill_term is not None:  # config validation refuses it with sampling or MRT
            counts["distill_kl"] = distill_term(teachers, batch, inputs, src_segments,
                                                tgt_segments, logits, weights)
            loss_sum = distill.mixed_loss(loss_sum, counts["distill_kl"], config)
        counts["correct"] = metrics.correct_tokens(logits.argmax(-1), targets, weights)
        counts["tokens"] = weights.sum()
        return loss_sum, (counts, batch_stats)

    return batch_sums


def _teacher_inputs(
    model: Seq2Seq, config: ml_collections.ConfigDict, tgt_tokens: Array,
    segments: dict[str, Array] | None, rng: Array,
) -> Array:
    """The teacher-forced decoder inputs [batch, tgt_len] of targets [batch, tgt_len]: gold,
    with `config.teacher_forcing.input_noise` of them replaced by random tokens drawn from `rng`
    (`flax_s2s.input_noise`)."""
    segment_ids = None if segments is None else segments["segment_ids"]
    inputs = decoder_inputs(tgt_tokens, model.special_tokens.bos, segment_ids)
    rate = config.teacher_forcing.get("input_noise", 0.0)
    if rate <= 0:
        return inputs
    positions = None if segments is None else segments["positions"]
    noisy, _ = input_noise.noisy_inputs(
        inputs, input_noise.noise_key(rng), rate, model.module.tgt_vocab_size,
        model.special_tokens, positions,
    )
    return noisy


def _token_metrics(counts: dict[str, Array]) -> dict[str, Array]:
    """A step's metrics from its sums: token accuracy, the per-token means of the MRT risk and
    the distillation KL, and the by-position counts as they are."""
    per_token = ("mrt_risk", "distill_kl")
    by_position = {k: v for k, v in counts.items() if k not in ("correct", "tokens", *per_token)}
    tokens = jnp.maximum(counts["tokens"], 1.0)
    for name in per_token:
        if name in counts:
            by_position[name] = counts[name] / tokens
    return {**by_position, "token_accuracy": counts["correct"] / tokens}


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


def check_config(config: ml_collections.ConfigDict) -> None:
    """The step's fields: label smoothing, the EMA decay (microbatches: `check_microbatches`)."""
    config_checks.fraction(config, "label_smoothing")
    config_checks.fraction(config, "ema_decay", note=" (0: off)")


def check_microbatches(config: ml_collections.ConfigDict, data_shards: int = 1) -> None:
    """`config.grad_accum_steps` splits each device's rows of the batch (`data_shards` devices
    on the mesh's `data` axis; 1 before the devices are known) into equal microbatches."""
    config_checks.positive(config, "grad_accum_steps")
    rows, steps = config.batch_size // data_shards, config.grad_accum_steps
    if rows % steps == 0:
        return
    if data_shards == 1:
        raise ConfigError(f"config.batch_size={config.batch_size} is not divisible by "
                          f"config.grad_accum_steps={steps} (microbatches per step)")
    raise ConfigError(
        f"config.batch_size={config.batch_size} over the mesh's data axis of {data_shards} gives "
        f"{rows} rows a device, not divisible by config.grad_accum_steps={steps}: each device "
        "splits its rows into the microbatches"
    )
