"""Train state, the jitted train and eval steps, and the training loop `run(config, workdir)`."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from flax_s2s import decoding, metrics
from flax_s2s.checkpoint import Checkpointer
from flax_s2s.config_validation import validate_config
from flax_s2s.data import pipeline
from flax_s2s.data.task_data import load_task_data
from flax_s2s.logs import MetricsWriter, Progress
from flax_s2s.models import Seq2Seq, build_model, decoder_inputs

Array = jax.Array


@flax.struct.dataclass
class TrainState:
    """Everything the next train step depends on (with the data position, saved beside it).

    `rng` stays fixed; each step derives its own keys as fold_in(rng, step), so no key is reused
    and a resumed run draws what an uninterrupted one would. `batch_stats` holds BatchNorm's
    running statistics ({} for models without BatchNorm).
    """

    step: Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: Array

    @property
    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats}


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


def create_train_state(
    model: Seq2Seq, tx: optax.GradientTransformation, seed: int, batch: dict[str, np.ndarray]
) -> TrainState:
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
    variables = jax.jit(model.init)(init_rng, batch["src_tokens"], batch["tgt_tokens"])
    params = variables["params"]
    return TrainState(
        step=jnp.asarray(0),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=train_rng,
    )


def make_train_step(model: Seq2Seq, tx: optax.GradientTransformation, config: ml_collections.ConfigDict):
    """(state, batch) -> (state, metrics); jit it once and reuse it."""

    def loss_fn(params, batch_stats, batch, rng):
        tgt_tokens = batch["tgt_tokens"]
        encode_rng, decode_rng = jax.random.split(rng)
        # update_stats: BatchNorm models also return their moved running statistics ({} else).
        encoded, batch_stats = model.encode(
            {"params": params, "batch_stats": batch_stats}, batch["src_tokens"],
            train=True, rng=encode_rng, update_stats=True,
        )
        logits, batch_stats = model.forward(
            {"params": params, "batch_stats": batch_stats}, encoded, decoder_inputs(tgt_tokens),
            train=True, rng=decode_rng, update_stats=True,
        )
        weights = metrics.token_weights(tgt_tokens)
        num_tokens = jnp.maximum(weights.sum(), 1.0)
        loss = metrics.cross_entropy_sum(logits, tgt_tokens, weights, config.label_smoothing)
        correct = metrics.correct_tokens(logits.argmax(-1), tgt_tokens, weights)
        return loss / num_tokens, ({"token_accuracy": correct / num_tokens}, batch_stats)

    def train_step(state: TrainState, batch: dict[str, Array]):
        step_rng = jax.random.fold_in(state.rng, state.step)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (aux, batch_stats)), grads = grad_fn(
            state.params, state.batch_stats, batch, step_rng
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        step_metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
        )
        return new_state, step_metrics

    return train_step


def make_eval_step(model: Seq2Seq, config: ml_collections.ConfigDict):
    """(variables, batch) -> sums for teacher-forced and free-running (greedy) metrics."""

    def eval_step(variables, batch):
        tgt_tokens, example_weights = batch["tgt_tokens"], batch["weights"]
        weights = metrics.token_weights(tgt_tokens, example_weights)
        encoded = model.encode(variables, batch["src_tokens"])
        logits = model.forward(variables, encoded, decoder_inputs(tgt_tokens))
        predicted, _, _ = decoding.greedy(
            model, variables, batch["src_tokens"], max_len=tgt_tokens.shape[1]
        )
        return {
            "loss_sum": metrics.cross_entropy_sum(logits, tgt_tokens, weights),
            "tf_correct": metrics.correct_tokens(logits.argmax(-1), tgt_tokens, weights),
            "fr_correct": metrics.correct_tokens(predicted, tgt_tokens, weights),
            "exact": metrics.exact_matches(predicted, tgt_tokens, example_weights),
            "tokens": weights.sum(),
            "examples": example_weights.sum(),
        }

    return eval_step


def evaluate(eval_step, variables, examples: pipeline.Examples, batch_size: int) -> dict[str, float]:
    """Teacher-forced loss/accuracy and free-running token accuracy/exact match over a split."""
    totals: dict[str, float] = {}
    for batch in pipeline.eval_batches(examples, batch_size):
        for key, value in jax.device_get(eval_step(variables, batch)).items():
            totals[key] = totals.get(key, 0.0) + float(value)
    tokens, examples_count = max(totals["tokens"], 1.0), max(totals["examples"], 1.0)
    return {
        "loss": totals["loss_sum"] / tokens,
        "token_accuracy": totals["tf_correct"] / tokens,
        "fr_token_accuracy": totals["fr_correct"] / tokens,
        "exact_match": totals["exact"] / examples_count,
    }


def _mean_metrics(history: list[dict[str, Array]]) -> dict[str, float]:
    stacked = jax.device_get(history)  # the one host sync per log interval
    return {k: float(np.mean([h[k] for h in stacked])) for k in stacked[0]}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming from its latest checkpoint), evaluates on the final
    eval split, and returns {"step", "final": metrics, "wall_time_s"}."""
    start_time = time.time()
    validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    splits = ("train", *config.eval_splits, config.final_eval_split)
    data = load_task_data(config, workdir, tuple(dict.fromkeys(splits)))
    train_examples = data.splits["train"]
    model = build_model(config, len(data.src_vocab), len(data.tgt_vocab))
    tx = make_optimizer(config)

    train_data = pipeline.train_dataset(train_examples, config.batch_size, config.seed)
    data_iterator = pipeline.train_iterator(train_data)
    state = create_train_state(model, tx, config.seed, train_data[0])
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), config.max_checkpoints)
    config_dict = json.loads(config.to_json())
    if checkpointer.latest_step() is not None:
        state = checkpointer.restore(state, data_iterator)
        print(f"resumed from {checkpointer.directory} at step {int(state.step)}", flush=True)

    train_step = jax.jit(make_train_step(model, tx, config), donate_argnums=0)
    eval_step = jax.jit(make_eval_step(model, config))
    writer = MetricsWriter(workdir)
    step = int(state.step)
    progress = Progress(step, config.num_train_steps)
    history: list[dict[str, Array]] = []
    while step < config.num_train_steps:
        state, step_metrics = train_step(state, next(data_iterator))
        step += 1
        history.append(step_metrics)
        progress.update(step)
        if step % config.log_every == 0 or step == config.num_train_steps:
            logged = _mean_metrics(history)
            history = []
            writer.write(step, "train", logged)
            progress.log(step, logged)
        if step % config.eval_every == 0 and step < config.num_train_steps:
            for split in config.eval_splits:
                result = evaluate(eval_step, state.variables, data.splits[split], config.eval_batch_size)
                writer.write(step, split, result)
                progress.write(f"step {step} {split}: " + _format(result))
        if step % config.checkpoint_every == 0 or step == config.num_train_steps:
            checkpointer.save(step, state, data_iterator, config_dict)
    progress.close()
    checkpointer.save(step, state, data_iterator, config_dict)  # no-op when already saved
    checkpointer.close()

    final = {}
    for split in dict.fromkeys((*config.eval_splits, config.final_eval_split)):
        final[split] = evaluate(eval_step, state.variables, data.splits[split], config.eval_batch_size)
        writer.write(step, split, final[split])
    wall_time = time.time() - start_time
    for split, result in final.items():
        print(f"final {split} (step {step}): {_format(result)}", flush=True)
    print(f"wall time: {wall_time:.1f}s", flush=True)
    return {"step": step, "final": final, "wall_time_s": wall_time}


def _format(result: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in result.items())


__all__ = [
    "TrainState", "create_train_state", "evaluate", "make_eval_step", "make_optimizer",
    "make_train_step", "run",
]
