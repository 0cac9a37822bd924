"""Normalisation ablation: which norm suits an autoregressive seq2seq model, measured.

On addition and reverse, with the same seed, data order and number of steps, trains
- the Transformer with norm in {layer, rms, batch, none} x norm_position in {pre, post},
- the LSTM with norm in {layer, batch, none} (pre),
and reports per run: the final teacher-forced test loss and token accuracy (running statistics for
BatchNorm), free-running (greedy) exact match, training tokens/s, and for BatchNorm the gap between
teacher-forced evaluation with batch statistics and with running statistics.

Internal covariate shift: on a fixed probe batch (the first validation examples), every
`--probe_every` steps, the per-feature mean and variance of the input of every sublayer (what
each attention / MLP / recurrent layer reads, sown into "intermediates"), over non-pad positions,
in training mode. Between consecutive records the drift is
  mean drift = ||mean_r - mean_{r-1}|| / ||std_{r-1}||   (shift of the mean in units of spread)
  var drift  = mean over features |log var_r - log var_{r-1}|
averaged over sublayers. The plot shows both against the training step.

    pip install -e '.[bench]'
    python bench/norm_ablation.py --workdir runs/norm_ablation

Writes `norm_ablation.json`, `norm_ablation.png` and a markdown table to `--out_dir`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import default  # noqa: E402
from flax_s2s import metrics, training  # noqa: E402
from flax_s2s.data import pipeline  # noqa: E402
from flax_s2s.data.task_data import load_task_data  # noqa: E402
from flax_s2s.data.vocab import PAD  # noqa: E402
from flax_s2s.models import Seq2Seq, build_model, decoder_inputs  # noqa: E402
from flax_s2s.models.norms import masked_moments  # noqa: E402

TASK_LENGTHS = {"addition": (8, 6), "reverse": (12, 13)}  # max_src_len, max_tgt_len
# What the results depend on (the directories they were written to are left out).
EXPERIMENT_SETTINGS = ("tasks", "only", "steps", "batch_size", "learning_rate", "probe_every",
                       "probe_size")


@dataclasses.dataclass(frozen=True)
class Variant:
    model: str
    norm: str
    norm_position: str

    @property
    def name(self) -> str:
        return f"{self.model}-{self.norm}-{self.norm_position}"


def variants() -> list[Variant]:
    runs = [Variant("transformer", norm, position)
            for norm in ("layer", "rms", "batch", "none") for position in ("pre", "post")]
    return runs + [Variant("lstm", norm, "pre") for norm in ("layer", "batch", "none")]


def make_config(task: str, variant: Variant, args: argparse.Namespace):
    config = default.get_config()
    config.task = task
    config.data_dir = args.data_dir
    config.max_src_len, config.max_tgt_len = TASK_LENGTHS[task]
    config.batch_size = args.batch_size
    config.num_train_steps = args.steps
    config.optimizer.learning_rate = args.learning_rate
    config.optimizer.warmup_steps = args.steps // 10
    model = config.model
    model.type, model.norm, model.norm_position = variant.model, variant.norm, variant.norm_position
    # Tiny models, so that 22 runs fit in minutes on a CPU.
    model.update(d_model=32, num_heads=2, mlp_dim=64, num_encoder_layers=2, num_decoder_layers=2)
    if variant.model == "lstm":
        model.update(emb_dim=32, hidden_dim=48, attention_dim=32, num_encoder_layers=1)
    return config


def make_probe(model: Seq2Seq):
    """(variables, src_tokens, tgt_tokens) -> {sublayer: (mean [features], var [features])} of
    every sown sublayer input over non-pad positions, in training mode (batch statistics for
    BatchNorm; the running statistics are not written back)."""
    module = model.module
    cls = type(module)

    def sown(variables, *args, method):
        result, state = module.apply(variables, *args, True, method=getattr(cls, method),
                                     mutable=["intermediates", "batch_stats"])
        return result, state.get("intermediates", {})

    def moments(tree, mask, prefix):
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {prefix + jax.tree_util.keystr(path): masked_moments(value, mask)[:2]
                for path, value in flat}

    @jax.jit
    def probe(variables, src_tokens, tgt_tokens):
        tgt_inputs = decoder_inputs(tgt_tokens)
        encoded, encoder_sown = sown(variables, src_tokens, method="encode")
        if hasattr(cls, "forward"):
            _, decoder_sown = sown(variables, encoded, tgt_inputs, method="forward")
        else:  # a recurrent decoder sows per step: scan, then put time after batch
            cache = module.apply(variables, encoded, tgt_inputs.shape[1], method=cls.init_cache)

            def body(cache, inputs):
                position, prev_tokens = inputs
                (_, cache), step_sown = sown(
                    variables, encoded, cache, prev_tokens, position, method="step")
                return cache, step_sown

            steps = (jnp.arange(tgt_inputs.shape[1]), tgt_inputs.T)
            _, decoder_sown = jax.lax.scan(body, cache, steps)
            decoder_sown = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), decoder_sown)
        return {**moments(encoder_sown, src_tokens != PAD, "encode"),
                **moments(decoder_sown, tgt_inputs != PAD, "decode")}

    return probe


def drift(records: list[dict[str, tuple[np.ndarray, np.ndarray]]]) -> tuple[list, list]:
    """Mean and variance drift between consecutive probe records, averaged over sublayers."""
    mean_drift, var_drift = [], []
    for before, after in zip(records, records[1:], strict=False):
        shifts, log_ratios = [], []
        for name, (mean0, var0) in before.items():
            mean1, var1 = after[name]
            shifts.append(np.linalg.norm(mean1 - mean0) / max(np.sqrt(var0.sum()), 1e-8))
            log_ratios.append(np.abs(np.log(var1 + 1e-8) - np.log(var0 + 1e-8)).mean())
        mean_drift.append(float(np.mean(shifts)))
        var_drift.append(float(np.mean(log_ratios)))
    return mean_drift, var_drift


def make_batch_stats_eval(model: Seq2Seq):
    """Teacher-forced loss sums with BatchNorm's batch statistics (the training-mode function)."""

    @jax.jit
    def eval_step(variables, batch):
        tgt_tokens = batch["tgt_tokens"]
        weights = metrics.token_weights(tgt_tokens, batch["weights"])
        encoded, stats = model.encode(variables, batch["src_tokens"], train=True, update_stats=True)
        logits, _ = model.forward({**variables, "batch_stats": stats}, encoded,
                                  decoder_inputs(tgt_tokens), train=True, update_stats=True)
        return {"loss_sum": metrics.cross_entropy_sum(logits, tgt_tokens, weights),
                "tf_correct": metrics.correct_tokens(logits.argmax(-1), tgt_tokens, weights),
                "tokens": weights.sum()}

    return eval_step


def batch_stats_eval(eval_step, variables, examples, batch_size: int) -> dict[str, float]:
    totals: dict[str, float] = {}
    for batch in pipeline.eval_batches(examples, batch_size):
        for key, value in jax.device_get(eval_step(variables, batch)).items():
            totals[key] = totals.get(key, 0.0) + float(value)
    return {"loss": totals["loss_sum"] / totals["tokens"],
            "token_accuracy": totals["tf_correct"] / totals["tokens"]}


def run_one(task: str, variant: Variant, data, args) -> dict[str, Any]:
    config = make_config(task, variant, args)
    model = build_model(config, len(data.src_vocab), len(data.tgt_vocab))
    tx = training.make_optimizer(config)
    train_data = pipeline.train_dataset(data.splits["train"], config.batch_size, config.seed)
    state = training.create_train_state(model, tx, config.seed, train_data[0])
    train_step = jax.jit(training.make_train_step(model, tx, config))
    probe = make_probe(model)
    validation = data.splits["validation"]
    probe_src, probe_tgt = validation.src[: args.probe_size], validation.tgt[: args.probe_size]

    records, record_steps, losses = [], [], []
    train_time, train_tokens = 0.0, 0
    state, step_metrics = train_step(state, train_data[0])  # compiles; this step is not timed
    jax.block_until_ready(state)
    segment_start = time.perf_counter()
    for step in range(1, args.steps + 1):
        if step % args.probe_every == 0 or step in (1, args.steps):
            jax.block_until_ready(state)  # the one host sync per record; probing is not timed
            train_time += time.perf_counter() - segment_start
            records.append(jax.device_get(probe(state.variables, probe_src, probe_tgt)))
            record_steps.append(step)
            if step > 1:
                losses.append((step, float(step_metrics["loss"])))
            segment_start = time.perf_counter()
        if step == args.steps:
            break
        batch = train_data[step]
        state, step_metrics = train_step(state, batch)
        train_tokens += int((batch["tgt_tokens"] != PAD).sum())

    final = training.evaluate(training.make_evaluator(model, config), state.variables, data.splits["test"],
                              config.eval_batch_size)
    result = {"task": task, **dataclasses.asdict(variant), "steps": args.steps,
              "final_train_loss": losses[-1][1], "train_losses": losses,
              "test": final, "tokens_per_s": train_tokens / train_time}
    if variant.norm == "batch":
        with_batch_stats = batch_stats_eval(make_batch_stats_eval(model), state.variables,
                                            data.splits["test"], config.eval_batch_size)
        result["test_batch_stats"] = with_batch_stats
        result["batch_minus_running_loss"] = with_batch_stats["loss"] - final["loss"]
    mean_drift, var_drift = drift(records)
    result.update(probe_steps=record_steps[1:], mean_drift=mean_drift, var_drift=var_drift)
    return result


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| task | model | norm | position | TF loss | TF token acc | FR exact match | tokens/s "
        "| batch - running TF loss | mean drift (first / last half) "
        "| var drift (first / last half) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        half = len(r["mean_drift"]) // 2
        gap = r.get("batch_minus_running_loss")
        lines.append(
            f"| {r['task']} | {r['model']} | {r['norm']} | {r['norm_position']} "
            f"| {r['test']['loss']:.3f} | {r['test']['token_accuracy']:.3f} "
            f"| {r['test']['exact_match']:.3f} | {r['tokens_per_s']:,.0f} "
            f"| {'' if gap is None else f'{gap:+.3f}'} "
            f"| {np.mean(r['mean_drift'][:half]):.3f} / {np.mean(r['mean_drift'][half:]):.3f} "
            f"| {np.mean(r['var_drift'][:half]):.3f} / {np.mean(r['var_drift'][half:]):.3f} |"
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in results})
    colors = {"layer": "tab:blue", "rms": "tab:green", "batch": "tab:red", "none": "tab:gray"}
    styles = {("transformer", "pre"): "-", ("transformer", "post"): "--", ("lstm", "pre"): ":"}
    figure, axes = plt.subplots(len(tasks), 2, figsize=(12, 4.2 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        for r in (r for r in results if r["task"] == task):
            style = dict(color=colors[r["norm"]], linestyle=styles[r["model"], r["norm_position"]],
                         label=f"{r['model']} {r['norm']} {r['norm_position']}")
            axes[row, 0].plot(r["probe_steps"], r["mean_drift"], **style)
            axes[row, 1].plot(r["probe_steps"], r["var_drift"], **style)
        axes[row, 0].set_title(f"{task}: drift of sublayer-input mean (per record)")
        axes[row, 1].set_title(f"{task}: drift of sublayer-input log variance (per record)")
        for axis in axes[row]:
            axis.set_yscale("log")
            axis.set_xlabel("training step")
    axes[0, 1].legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/norm_ablation")
    parser.add_argument("--data_dir", default="",
                        help="prepared TFDS data (default: beside workdir)")
    parser.add_argument("--out_dir", default=os.path.join(ROOT, "bench"))
    parser.add_argument("--tasks", default="addition,reverse")
    parser.add_argument("--only", default="",
                        help="comma-separated variant names, e.g. lstm-batch-pre")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--probe_every", type=int, default=25)
    parser.add_argument("--probe_size", type=int, default=128)
    args = parser.parse_args()

    results = []
    started = time.time()
    for task in args.tasks.split(","):
        config = make_config(task, variants()[0], args)
        data = load_task_data(config, os.path.join(args.workdir, task),
                              ("train", "validation", "test"))
        for variant in variants():
            if args.only and variant.name not in args.only.split(","):
                continue
            run_start = time.time()
            result = run_one(task, variant, data, args)
            result["wall_s"] = time.time() - run_start
            results.append(result)
            print(f"{task} {variant.name}: test {result['test']} tokens/s "
                  f"{result['tokens_per_s']:.0f} gap {result.get('batch_minus_running_loss')} "
                  f"({result['wall_s']:.0f}s)", flush=True)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "norm_ablation.json"), "w") as f:
        settings = {key: getattr(args, key) for key in EXPERIMENT_SETTINGS}
        json.dump({"settings": settings, "results": results}, f, indent=1)
    plot(results, os.path.join(args.out_dir, "norm_ablation.png"))
    print(markdown_table(results))
    print(f"total wall time: {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
