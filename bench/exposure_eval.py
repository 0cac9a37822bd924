"""The scores of `bench/exposure_study.py`: each run's outputs on the study's test sets, greedy and
beam 5, cached in its workdir (`study_eval.json`); errors after errors; recovery curves; the
paired bootstrap; the table."""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Callable, Sequence

import jax
import numpy as np
from g2p_scheduled_sampling import final_record
from ss_finetune import Job

from flax_s2s import diagnostics, reference_eval
from flax_s2s.data import pipeline, registry, task_data
from flax_s2s.data.vocab import split_symbols
from flax_s2s.workdirs import load_workdir

CACHE = "study_eval.json"
BEAMS = {"greedy": 0, "beam5": 5}
TEST_SETS = {"numbers": ("test", "test_pattern", "test_magnitude"),
             "g2p": ("validation", "validation_long")}
RECOVERY = {"numbers": ("test", 30), "g2p": ("validation", 12)}  # split, positions replaced
LONG_WORD = 10  # letters of a validation_long word, at least
DISTANCES = (1, 2, 3, 5, 10)


def finished(job: Job) -> bool:
    return final_record(job.workdir, job.steps) is not None


def error_after_error_function() -> Callable | None:
    """`diagnostics.error_after_error`, where this code has it (looked up, not imported by name)."""
    return getattr(importlib.import_module("flax_s2s.diagnostics"), "error_after_error", None)


def test_pairs(config, task: str, workdir: str) -> dict[str, list[tuple[str, str]]]:
    data_dir = config.data_dir or task_data.default_data_dir(workdir)
    if task == "numbers":
        return registry.read_task_texts(config, data_dir, TEST_SETS["numbers"])
    pairs = registry.read_task_texts(config, data_dir, ("validation",))["validation"]
    return {"validation": pairs,
            "validation_long": [(w, p) for w, p in pairs if len(w) >= LONG_WORD]}


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def _decode_split(trained, pairs, beam: int) -> dict:
    config = trained.config
    grouped = pipeline.group_pairs(pairs, trained.src_vocab, config.max_src_len,
                                   config.vocab.get("src_eos", False))
    decode = reference_eval.best_decoder(trained.model, trained.variables, config.max_tgt_len,
                                         beam, config.eval_length_alpha)
    tokens = reference_eval.decode_sources(decode, grouped.src, config.eval_batch_size)
    separator = trained.tgt_vocab.separator
    hyps = [split_symbols(trained.tgt_vocab.decode(row), separator) for row in tokens]
    refs = [[split_symbols(r, separator) for r in rs] for rs in grouped.references]
    nearest = [min(rs, key=lambda r, h=h: edit_distance(h, r)) for h, rs in zip(hyps, refs, strict=True)]
    return {"correct": [h in rs for h, rs in zip(hyps, refs, strict=True)], "predictions": hyps,
            "references": nearest}


def _recovery(trained, workdir: str, task: str) -> dict:
    split, count = RECOVERY[task]
    config = trained.config
    examples = task_data.load_task_data(config, workdir, (split,)).splits[split]
    batch = next(pipeline.eval_batches(examples, 500))
    curve = diagnostics.recovery_curve(trained.model, trained.variables, batch["src_tokens"],
                                       batch["tgt_tokens"], list(range(count)), "wrong",
                                       jax.random.PRNGKey(0))
    return {name: [None if math.isnan(v) else float(v) for v in values]
            for name, values in curve.items()}


def evaluate_run(job: Job, task: str) -> dict:
    """The run's scores, computed where missing and cached in its workdir after each part:
    {"scores": {split: {decoding: {"correct", "predictions", "references"}}},
     "error_after_error": {split: dict (greedy outputs)}, "recovery": {"tokens", "clean",
     "corrupted"} by distance}."""
    path = os.path.join(job.workdir, CACHE)
    result = json.load(open(path)) if os.path.exists(path) else {}
    result.setdefault("scores", {})
    result.setdefault("error_after_error", {})
    trained = None

    def save() -> None:
        with open(path + ".partial", "w") as f:
            json.dump(result, f)
        os.replace(path + ".partial", path)

    def model():
        nonlocal trained
        if trained is None:
            trained = load_workdir(job.workdir)
        return trained

    pairs = None
    for split in TEST_SETS[task]:
        for name, beam in BEAMS.items():
            if name not in result["scores"].get(split, {}):
                pairs = pairs or test_pairs(model().config, task, job.workdir)
                result["scores"].setdefault(split, {})[name] = _decode_split(model(), pairs[split],
                                                                             beam)
                save()
    eae = error_after_error_function()
    for split in TEST_SETS[task]:
        if eae is not None and split not in result["error_after_error"]:
            greedy = result["scores"][split]["greedy"]
            result["error_after_error"][split] = eae(greedy["predictions"], greedy["references"])
            save()
    if "recovery" not in result:
        result["recovery"] = _recovery(model(), job.workdir, task)
        save()
    return result


def describe_eae(found: dict) -> str:
    return (f"error rate after an error {100 * found['rate_after_error']:.2f}% "
            f"({found['errors_after_error']} / {found['positions_after_error']} positions), "
            f"after none {100 * found['rate_after_clean']:.2f}% "
            f"({found['errors_after_clean']} / {found['positions_after_clean']})")


def paired_bootstrap(diffs: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of diffs [seeds, examples] and its 95% interval: each replicate resamples the seeds
    and (one draw shared by all seeds, which score the same examples) the examples."""
    rng = np.random.default_rng(seed)
    seeds, n = diffs.shape
    stats = np.empty(reps)
    for r in range(reps):
        rows = rng.integers(0, seeds, seeds)
        cols = rng.integers(0, n, n)
        stats[r] = diffs[np.ix_(rows, cols)].mean()
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(diffs.mean()), float(lo), float(hi)


def _errors(result: dict, split: str, decoding: str) -> np.ndarray:
    return 1.0 - np.asarray(result["scores"][split][decoding]["correct"], np.float64)


def _symbol_errors(result: dict, split: str, decoding: str) -> np.ndarray:
    """Per example: edit distance to the nearest reference over its length (a secondary metric
    that, unlike sequence error, sees what follows a first error)."""
    got = result["scores"][split][decoding]
    return np.asarray([edit_distance(h, r) / max(len(r), 1)
                       for h, r in zip(got["predictions"], got["references"], strict=True)])


def _by_arm(runs: dict, arms: list[str], seeds: list[int], splits: Sequence[str],
            metric: Callable) -> list[str]:
    lines = ["| arm | seeds | " + " | ".join(splits) + " |", "|---|---|" + "---|" * len(splits)]
    for arm in ["base", *arms]:
        done = [s for s in seeds if (arm, s) in runs]
        if done:
            cells = [" / ".join(f"{100 * np.mean([metric(runs[arm, s], split, d).mean() for s in done]):.2f}"
                                for d in BEAMS) for split in splits]
            lines.append(f"| {arm} | {len(done)} | " + " | ".join(cells) + " |")
    return lines


def _paired(runs: dict, task, arms: list[str], seeds: list[int], splits: Sequence[str],
            metric: Callable) -> list[str]:
    lines = ["| arm | split | decoding | seeds | difference [95% interval] | per seed |",
             "|---|---|---|---|---|---|"]
    for arm in arms:
        paired = [s for s in seeds if (arm, s) in runs and ("tf", s) in runs]
        if arm == "tf" or not paired:
            continue
        for split in (*task.primary, *[s for s in splits if s not in task.primary]):
            for decoding in BEAMS:
                diffs = np.stack([metric(runs[arm, s], split, decoding)
                                  - metric(runs["tf", s], split, decoding) for s in paired])
                mean, lo, hi = paired_bootstrap(100 * diffs)
                per_seed = ", ".join(f"{100 * d.mean():+.2f}" for d in diffs)
                lines.append(f"| {arm} | {split} | {decoding} | {len(paired)} | {mean:+.2f} "
                             f"[{lo:+.2f}, {hi:+.2f}] | {per_seed} |")
    return lines


def table(task, seeds: list[int], arms: list[str], job_of: Callable, base_of: Callable,
          notes: list[str]) -> list[str]:
    """Markdown lines: scores by arm, paired differences against tf, errors after errors, the
    recovery curves. job_of(arm, seed) -> Job | None (None: the arm is not in this code)."""
    runs = {}  # (arm, seed) -> result
    missing = []
    for seed in seeds:
        for arm in ["base", *arms]:
            job = base_of(seed) if arm == "base" else job_of(arm, seed)
            if job is None or not finished(job):
                missing.append(f"{arm}/seed{seed}")
                continue
            runs[arm, seed] = evaluate_run(job, task.name)
    splits = TEST_SETS[task.name]
    single = ["With one seed done the interval is over the test examples alone.", ""]
    lines = [*notes, "", f"Runs not (yet) finished: {', '.join(missing) or 'none'}.", "",
             *(single if len({s for _, s in runs}) == 1 else []),
             "Sequence error % (mean over the seeds done), greedy / beam 5:", "",
             *_by_arm(runs, arms, seeds, splits, _errors), "",
             "Paired difference arm - tf in sequence error (points; negative: the arm is better), "
             "pooled over the seeds both finished, 95% bootstrap interval over seeds and test "
             "examples; the per-seed differences after it:", "",
             *_paired(runs, task, arms, seeds, splits, _errors), "",
             "Secondary: symbol error % (edit distance to the nearest reference over its length, "
             "mean over examples and seeds), greedy / beam 5:", "",
             *_by_arm(runs, arms, seeds, splits, _symbol_errors), "",
             "Its paired difference arm - tf (points), as above:", "",
             *_paired(runs, task, arms, seeds, splits, _symbol_errors)]
    lines += ["", "Errors after an error against after none (greedy outputs aligned to the "
              "reference by edit distance; rates summed over the seeds):", "",
              "| arm | split | after an error % | after none % |", "|---|---|---|---|"]
    for arm in ["base", *arms]:
        for split in splits:
            found = [runs[arm, s]["error_after_error"].get(split) for s in seeds if (arm, s) in runs]
            found = [f for f in found if f]
            if not found:
                continue
            rate = {k: 100 * sum(f[f"errors_after_{k}"] for f in found)
                    / max(sum(f[f"positions_after_{k}"] for f in found), 1)
                    for k in ("error", "clean")}
            lines.append(f"| {arm} | {split} | {rate['error']:.2f} | {rate['clean']:.2f} |")
    if error_after_error_function() is None:
        lines.append("(not computed: this code has no diagnostics.error_after_error)")
    split, _ = RECOVERY[task.name]
    lines += ["", f"Recovery on {split} (the gold prefix with one token replaced by the most likely "
              "wrong one, the rest teacher forced): corrupted minus clean token accuracy, points, "
              "by distance d after the replaced token, mean over seeds:", "",
              "| arm | " + " | ".join(f"d={d}" for d in DISTANCES) + " |",
              "|---|" + "---|" * len(DISTANCES)]
    for arm in ["base", *arms]:
        curves = [runs[arm, s]["recovery"] for s in seeds if (arm, s) in runs]
        if not curves:
            continue
        cells = []
        for d in DISTANCES:
            gaps = [c["corrupted"][d] - c["clean"][d] for c in curves
                    if d < len(c["clean"]) and c["clean"][d] is not None]
            cells.append(f"{100 * np.mean(gaps):+.1f}" if gaps else "-")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines
