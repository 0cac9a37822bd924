"""Score a trained workdir on any `WORD<TAB>PHONES` file (word and phone error rates, exact
match), or on a split of its own task with the run's text metrics (BLEU, chrF, ROUGE, ...).

    python -m flax_s2s.cli.evaluate --workdir DIR --data FILE [--beam N] [--step S] [--average K]
    python -m flax_s2s.cli.evaluate --workdir DIR --split validation [--beam N] [--metrics rouge]
    python -m flax_s2s.cli.evaluate --workdir DIR --ensemble DIR2 [--ensemble DIR3 ...] --data FILE
    python -m flax_s2s.cli.evaluate --workdir DIR --data FILE --mbr 16 [--mbr_utility edit] [--top_p 0.9]

Loads the workdir's latest checkpoint (or `--step`; `--average K` takes the mean of the K kept
checkpoints ending there), its config and its saved vocabularies, decodes every
distinct word of FILE (or of a split of the run's own task, e.g. the validation words carved out
of its training file) once and scores it against all the pronunciations listed for it: a word is
right when the output equals any of them. With `--ensemble`, the models of all the workdirs decode
together, their next-phone distributions averaged at every step (`flax_s2s.ensemble`); the data
and config (lengths, batch, length penalty) come from `--workdir`. With `--mbr N`, each word's
output is the minimum-Bayes-risk pick among N candidates (`flax_s2s.mbr`).

The metrics: `--metrics` names them (`reference_eval.METRIC_NAMES`); by default WER, PER and exact
match on a lexicon file, and on a split the run's own `config.text_metrics` and exact match (WER,
PER and exact match for a run without text metrics).

`--diagnose recovery,error_after_error` adds the exposure-bias diagnostics (`flax_s2s.diagnostics`)
of the evaluated model on the same data, written as a JSON record (`diagnostics_record`):
recovery curves after a wrong and after a random token in the gold prefix, and, on the decoded
outputs scored here, the error rate after an earlier error against after none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from rapidfuzz.distance import Levenshtein

from flax_s2s import decoding, diagnostics, mbr, reference_eval
from flax_s2s.data import cmudict_g2p, pipeline, registry, task_data
from flax_s2s.data.vocab import Vocab, split_symbols
from flax_s2s.ensemble import Ensemble
from flax_s2s.workdirs import TrainedModel, WorkdirError, forced_controls, load_workdir


def evaluate_lexicon(
    workdir: str, data_path: str | None, beam_size: int = 0, batch_size: int = 0,
    split: str | None = None, step: int | None = None, average: int = 1,
    ensemble: tuple[str, ...] = (),
    mbr_settings: mbr.MBRSettings | None = None,
    raw_weights: bool = False,
    metric_names: Sequence[str] | None = None,
    controls: decoding.GenerationControls | None = None,
    diagnose: Sequence[str] = (),
    max_distance: int = 10,
) -> dict[str, Any]:
    """The metrics (`default_metrics` unless `metric_names`) of the workdir's model on a lexicon
    file, or (`split`, with `data_path` None) on a split of the run's own task: WER, PER (percent),
    exact match (fraction), BLEU, chrF, ROUGE (0-100), by name, and under "metric_names" their
    names in order ("rouge" gives rouge1, rouge2, rougeL, rougeLsum).

    `step` picks the checkpoint (default: the latest); `average` > 1 scores the mean of that many
    kept checkpoints ending at it. `beam_size` 0 decodes greedily. `ensemble` adds workdirs whose
    models decode together with this one (each at its latest checkpoint, averaged like this one).
    `mbr_settings` decodes by MBR instead (beam_size must then be 0). Runs that kept a moving
    average of their parameters are scored with it, unless `raw_weights`. `controls`: the
    generation controls of every search (`flax_s2s.decoding.GenerationControls`).

    `diagnose` names diagnostics (`diagnostics.DIAGNOSES`) to run on the same data; their record
    (`diagnostics_record`) is returned under "diagnostics"."""
    reference_eval.check_beam_size(beam_size)
    check_diagnose(diagnose, max_distance, ensemble)
    if mbr_settings is not None and beam_size:
        raise ValueError(f"--beam={beam_size} with --mbr={mbr_settings.candidates}: choose one "
                         "(--mbr_source=beam takes the N-best of a beam of width --mbr)")
    if ensemble and step is not None:
        raise ValueError("--step picks one run's checkpoint; ensemble members use their latest")
    _check_metrics(metric_names)
    trained = load_workdir(workdir, step, average, raw_weights)
    controls = forced_controls(trained, controls)  # the run's config.forced_bos
    config, src_vocab, tgt_vocab = trained.config, trained.src_vocab, trained.tgt_vocab
    names = tuple(metric_names or default_metrics(config, split))
    members = _load_members(trained, ensemble, average, raw_weights)
    model, variables = _decoder(trained, members)
    if split is None:
        pairs = cmudict_g2p.read_lexicon(data_path)
    else:
        data_dir = config.data_dir or task_data.default_data_dir(workdir)
        pairs = registry.read_task_texts(config, data_dir, (split,))[split]
    grouped = pipeline.group_pairs(pairs, src_vocab, config.max_src_len,
                                   config.vocab.get("src_eos", False))
    batch_size = batch_size or config.eval_batch_size
    if mbr_settings is None:
        decode = reference_eval.best_decoder(
            model, variables, config.max_tgt_len, beam_size,
            alpha=config.eval_length_alpha,  # the length penalty the run was configured with
            controls=controls)
        tokens = reference_eval.decode_sources(decode, grouped.src, batch_size)
    else:
        tokens = mbr.mbr_decode(model, variables, grouped.src, tgt_vocab, config.max_tgt_len,
                                mbr_settings, batch_size, config.eval_length_alpha, controls)
    results = reference_eval.score_outputs(tokens, grouped, tgt_vocab, names)
    extra = {}
    if diagnose:
        extra["diagnostics"] = diagnostics_record(trained, pairs, tokens, grouped, diagnose,
                                                  batch_size, max_distance)
    return {"step": trained.step, "averaged_steps": trained.averaged_steps, "words": len(grouped),
            "member_steps": tuple(m.step for m in members), "metric_names": tuple(results),
            **results, **extra}


def check_diagnose(names: Sequence[str], max_distance: int, ensemble: Sequence[str] = ()) -> None:
    """ValueError naming the flag for an unknown diagnostic, a max distance below 1, or recovery
    asked of an ensemble (it teacher-forces one model)."""
    unknown = [name for name in names if name not in diagnostics.DIAGNOSES]
    if unknown:
        raise ValueError(f"--diagnose={','.join(names)}: {unknown} not in "
                         f"{list(diagnostics.DIAGNOSES)}")
    if max_distance < 1:
        raise ValueError(f"--max_distance={max_distance}: must be >= 1")
    if "recovery" in names and ensemble:
        raise ValueError("--diagnose=recovery teacher-forces one model: it cannot run with "
                         "--ensemble")


def diagnostics_record(
    trained: TrainedModel, pairs: Sequence[tuple[str, str]], tokens: np.ndarray,
    grouped: pipeline.GroupedReferences, names: Sequence[str], batch_size: int,
    max_distance: int = 10,
) -> dict[str, Any]:
    """The diagnostics `names` of `trained` on the evaluated data, as JSON values.

    "recovery": `diagnostics.recovery_curve` over every (source, target) pair of `pairs`, each
    target position k before the longest target's EOS replaced in turn (two teacher-forced passes
    per batch, position and corruption), for the corruptions "wrong" and
    "random" (keys from the run's config.seed), as `diagnostics.recovery_record`s to
    `max_distance`. "error_after_error": `diagnostics.error_after_error` of the decoded outputs
    `tokens` [n_sources, max_len], one per source of `grouped`, in the symbols the error rates
    count (`split_symbols`), each against its closest reference by edit distance (the first on
    ties); rates without positions are None."""
    record: dict[str, Any] = {"kind": diagnostics.RECORD_KIND, "step": trained.step}
    if "recovery" in names:
        record["recovery"] = _recovery(trained, pairs, batch_size, max_distance)
    if "error_after_error" in names:
        predictions, references = closest_references(tokens, grouped, trained.tgt_vocab)
        rates = diagnostics.error_after_error(predictions, references)
        for name in ("rate_after_error", "rate_after_clean"):
            rates[name] = diagnostics.json_numbers([rates[name]])[0]
        rates["by_distance"]["rate"] = diagnostics.json_numbers(rates["by_distance"]["rate"])
        record["error_after_error"] = rates
    return record


def _recovery(
    trained: TrainedModel, pairs: Sequence[tuple[str, str]], batch_size: int, max_distance: int
) -> dict[str, Any]:
    """Recovery records of the "wrong" and "random" corruptions over `pairs` (a compile each)."""
    config = trained.config
    examples = pipeline.tokenize(pairs, trained.src_vocab, trained.tgt_vocab, config.max_src_len,
                                 config.max_tgt_len, split="evaluated",
                                 src_eos=config.vocab.get("src_eos", False), evaluated=True)
    longest = int((examples.tgt != trained.model.special_tokens.pad).sum(axis=1).max())
    positions = list(range(longest - 1))  # every k before some target's EOS
    key = jax.random.PRNGKey(config.seed)
    return {corruption: diagnostics.recovery_record(diagnostics.recovery_curve(
                trained.model, trained.variables, examples.src, examples.tgt, positions,
                corruption, key, batch_size), max_distance)
            for corruption in diagnostics.CORRUPTIONS}


def closest_references(
    tokens: np.ndarray, grouped: pipeline.GroupedReferences, tgt_vocab: Vocab
) -> tuple[list[list[int]], list[list[int]]]:
    """(predictions, references) as lists of symbol numbers: each decoded output's symbols and
    those of its closest reference (fewest edits; the first on ties). Symbols are numbered in
    order of first appearance."""
    numbers: dict[str, int] = {}

    def numbered(text: str) -> list[int]:
        return [numbers.setdefault(s, len(numbers)) for s in split_symbols(text,
                                                                           tgt_vocab.separator)]

    predictions, references = [], []
    for row, refs in zip(tokens, grouped.references, strict=True):
        prediction = numbered(tgt_vocab.decode(row))
        candidates = [numbered(ref) for ref in refs]
        predictions.append(prediction)
        references.append(min(candidates, key=lambda ref: Levenshtein.distance(prediction, ref)))
    return predictions, references


LEXICON_METRICS = ("wer", "per", "exact_match")


def default_metrics(config: Any, split: str | None) -> tuple[str, ...]:
    """What is scored without `--metrics`: on a lexicon file (`split` None) WER, PER and exact
    match; on a split, the run's `config.text_metrics` and exact match, or the lexicon's three
    for a run without text metrics."""
    if split is None or not config.text_metrics:
        return LEXICON_METRICS
    return tuple(dict.fromkeys((*config.text_metrics, "exact_match")))


def _check_metrics(names: Sequence[str] | None) -> None:
    """ValueError naming --metrics for a name `reference_eval` does not score."""
    unknown = [name for name in names or () if name not in reference_eval.METRIC_NAMES]
    if unknown:
        raise ValueError(f"--metrics={','.join(names)}: {unknown} not in "
                         f"{list(reference_eval.METRIC_NAMES)}")


def _load_members(
    trained: TrainedModel, workdirs: tuple[str, ...], average: int, raw_weights: bool = False
) -> list[TrainedModel]:
    """The models of `workdirs` that decode together with `trained`; they must read and write the
    same symbols."""
    members = []
    for workdir in workdirs:
        member = load_workdir(workdir, None, average, raw_weights)
        for side in ("src_vocab", "tgt_vocab"):
            if getattr(member, side) != getattr(trained, side):
                raise WorkdirError(f"--ensemble {workdir}: its {side} differs from the first "
                                  "workdir's; ensemble members must share vocabularies")
        members.append(member)
    return members


def _decoder(trained: TrainedModel, members: list[TrainedModel]) -> tuple[Any, Any]:
    """(model, variables) to decode with: `trained` alone, or the ensemble of it and `members`."""
    if not members:
        return trained.model, trained.variables
    everyone = [trained, *members]
    return Ensemble(tuple(m.model for m in everyone)), tuple(m.variables for m in everyone)


if __name__ == "__main__":  # the former command, kept as an alias
    import runpy
    import sys

    print("python -m flax_s2s.evaluate is now python -m flax_s2s.cli.evaluate", file=sys.stderr)
    runpy.run_module("flax_s2s.cli.evaluate", run_name="__main__", alter_sys=True)
