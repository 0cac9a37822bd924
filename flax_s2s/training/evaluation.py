"""Evaluation of a split: teacher-forced and free-running metrics, by target position (the
exposure-bias gap), and text metrics against every reference. Needs no train state or loop:
`make_evaluator(model, config)` and `evaluate(evaluator, variables, examples, batch_size)`."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from flax_s2s import config_checks, decoding, lora, metrics, reference_eval, scoring, sharding
from flax_s2s.data import pipeline
from flax_s2s.data.vocab import Vocab
from flax_s2s.errors import ConfigError
from flax_s2s.models import Seq2Seq


def make_eval_step(model: Seq2Seq):
    """(variables, batch) -> sums for teacher-forced and free-running metrics, in total and by
    target position (the exposure-bias gap). The free-running outputs come decoded in
    `batch["predicted_tokens"]` [batch, tgt_len] (`Evaluator.decode`), so that one decode of a
    split serves these metrics and the text metrics alike.

    The teacher-forced loss and accuracy read `scoring.teacher_forced`, the scorer of the score
    command: the loss is the negative log-likelihood of the targets under the distribution
    decoding draws from (PAD and BOS excluded, `decoding.output_log_probs`), and a position is
    right when the token greedy decoding would pick after the true prefix is the target."""

    def eval_step(variables, batch):
        tgt_tokens, example_weights = batch["tgt_tokens"], batch["weights"]
        predicted = batch["predicted_tokens"]
        weights = metrics.token_weights(tgt_tokens, example_weights, pad=model.special_tokens.pad)
        forced = scoring.teacher_forced(model, variables, batch["src_tokens"], tgt_tokens)
        tf_by_position, tokens_by_position = metrics.accuracy_by_position(
            forced.predicted, tgt_tokens, weights
        )
        fr_by_position, _ = metrics.accuracy_by_position(predicted, tgt_tokens, weights)
        return {
            "tf_correct_by_position": tf_by_position,
            "fr_correct_by_position": fr_by_position,
            "tokens_by_position": tokens_by_position,
            "loss_sum": -(forced.log_probs * weights).sum(),
            "tf_correct": metrics.correct_tokens(forced.predicted, tgt_tokens, weights),
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
    variables_shardings: Any = None, forced_bos: int = -1,
) -> Evaluator:
    """An `Evaluator` decoding as `config.eval_beam_size` / `eval_length_alpha` say, every output
    starting with `forced_bos` unless it is -1 (the id of `config.forced_bos`); on `mesh`, each
    batch is split over its `data` axis and the results are replicated."""
    decode = functools.partial(
        decoding.best_sequences, model, max_len=config.max_tgt_len,
        beam_size=config.eval_beam_size, alpha=config.eval_length_alpha,
        controls=decoding.GenerationControls(forced_bos=forced_bos) if forced_bos >= 0 else None,
    )
    decode, score = _merging(decode), _merging(make_eval_step(model))
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


def _merging(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function(variables, ...)` reading a train state's variables with LoRA factors merged
    into the weights (`lora.merged_variables`; other variables pass as they are)."""
    return lambda variables, *args: function(lora.merged_variables(variables), *args)


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
    (WER/PER, BLEU/chrF, ROUGE; need `tgt_vocab`) of each unique source's output against all of its
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
    result.update(examples=int(totals["examples"]), cut_sources=examples.cut_sources)
    if text_metrics:
        result.update(reference_eval.score_outputs(outputs, grouped, tgt_vocab, text_metrics))
    return result


def check_config(config: ml_collections.ConfigDict) -> None:
    """The eval batch and search."""
    config_checks.positive(config, "eval_batch_size")
    if config.eval_beam_size < 0:
        raise ConfigError(
            f"config.eval_beam_size={config.eval_beam_size}: must be >= 0 (0: greedy decoding)"
        )
    unknown = [name for name in config.text_metrics if name not in metrics.TEXT_METRICS]
    if unknown:
        raise ConfigError(
            f"config.text_metrics={config.text_metrics!r}: {unknown} not in {list(metrics.TEXT_METRICS)}"
        )
