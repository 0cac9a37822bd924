"""Pictures of a run: `python -m flax_s2s.cli.report --workdir DIR` writes PNGs and `DIR/report/report.md`.

- curves.png: train loss, eval loss (teacher forced) and eval accuracy (teacher forced vs free
  running) against steps;
- schedule.png: the teacher-forcing probability p(step) the run trained with;
- by_position.png: accuracy by target position, teacher forced vs free running, at the last eval
  (the exposure-bias picture: free-running errors compound along the output); beside it, for
  scheduled-sampling runs, the realised share of gold tokens read at each decoder position;
- attention.png: decoder-to-source attention for a few validation examples, source tokens on one
  axis and predicted tokens on the other;
- recovery.png and error_after_error.png, when the workdir holds the record of the evaluate
  command's `--diagnose` (`diagnostics.json`): accuracy after one wrong or random token in the
  gold prefix relative to the clean prefix's, by distance; the error rate of free-running output
  after an earlier error against after none, and by distance from the latest error.

`python -m flax_s2s.cli.report --compare DIR1 DIR2 ... --out DIR` overlays runs on the same axes.
An existing report directory is replaced only with `--overwrite` (`flax_s2s.outputs`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from flax_s2s import decoding, diagnostics  # noqa: E402
from flax_s2s.data.task_data import load_task_data  # noqa: E402
from flax_s2s.errors import FileFormatError, read_json_object  # noqa: E402
from flax_s2s.logs import read_records  # noqa: E402
from flax_s2s.models import Seq2Seq, Variables, decoder_inputs  # noqa: E402
from flax_s2s.outputs import check_output, writing_directory  # noqa: E402
from flax_s2s.workdirs import load_workdir  # noqa: E402

Records = list[dict]
Array = jax.Array
# The files a report directory holds: an existing one holding anything else is not a report.
REPORT_FILES = ("curves.png", "schedule.png", "by_position.png", "attention.png",
                "recovery.png", "error_after_error.png", "report.md")


def load_records(workdir: str) -> Records:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: is {workdir} a flax_s2s workdir? (a "
                                "run writes it from its first log step)")
    return read_records(path)


def load_diagnostics(workdir: str) -> dict | None:
    """The workdir's diagnostics record (`python -m flax_s2s.cli.evaluate --diagnose ...`), or
    None when it has none; FileFormatError naming the file when it is not one."""
    path = os.path.join(workdir, diagnostics.RECORD_FILE)
    if not os.path.exists(path):
        return None
    expected = "the record of the evaluate command's --diagnose, a JSON object"
    record = read_json_object(path, expected)
    if record.get("kind") != diagnostics.RECORD_KIND:
        raise FileFormatError(f"{path}: its \"kind\" is {record.get('kind')!r}; expected {expected}")
    return record


def _series(records: Records, split: str, key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if r["split"] == split and key in r]
    # A resumed run may log a step twice; keep the last value of each step.
    merged = dict(points)
    return list(merged), list(merged.values())


def _eval_splits(records: Records) -> list[str]:
    return list(dict.fromkeys(r["split"] for r in records if r["split"] != "train"))


def plot_curves(runs: dict[str, Records], path: str) -> str:
    fig, (loss_ax, eval_ax, acc_ax) = plt.subplots(1, 3, figsize=(15, 4))
    for name, records in runs.items():
        prefix = f"{name}: " if len(runs) > 1 else ""
        loss_ax.plot(*_series(records, "train", "loss"), label=f"{prefix}train")
        for split in _eval_splits(records):
            eval_ax.plot(*_series(records, split, "loss"), marker="o", label=f"{prefix}{split}")
            acc_ax.plot(*_series(records, split, "token_accuracy"), marker="o",
                        label=f"{prefix}{split} teacher-forced token acc")
            acc_ax.plot(*_series(records, split, "exact_match"), marker="s", linestyle="--",
                        label=f"{prefix}{split} free-running exact match")
    for ax, title in ((loss_ax, "train loss"), (eval_ax, "eval loss (teacher forced)"),
                      (acc_ax, "eval accuracy")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    loss_ax.set_yscale("log")
    return _save(fig, path)


def plot_schedule(runs: dict[str, Records], path: str) -> str:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, records in runs.items():
        steps, probs = _series(records, "train", "teacher_forcing_prob")
        if not steps:  # runs without scheduled sampling are fully teacher forced
            steps = _series(records, "train", "loss")[0]
            probs = [1.0] * len(steps)
        ax.plot(steps, probs, label=name)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("step")
    ax.set_ylabel("p(feed the gold token)")
    ax.set_title("teacher-forcing schedule")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_by_position(runs: dict[str, Records], path: str) -> str | None:
    """`by_position_figure` saved to `path`; None (and no file) when no run logged it."""
    fig = by_position_figure(runs)
    return None if fig is None else _save(fig, path)


def by_position_figure(runs: dict[str, Records]) -> Figure | None:
    """Accuracy by target position, teacher forced vs free running, at each run's last eval; for
    scheduled-sampling runs a second panel beside it: the share of real tokens that read the gold
    token, by position, over the last log interval (`gold_rate_by_position`). None when no run
    logged accuracy by position."""
    with_gold = {name: [r for r in records if r.get("gold_rate_by_position")]
                 for name, records in runs.items()}
    with_gold = {name: logged[-1] for name, logged in with_gold.items() if logged}
    fig, axes = plt.subplots(1, 2 if with_gold else 1, figsize=(12 if with_gold else 6, 4),
                             squeeze=False)
    ax = axes[0, 0]
    drawn = False
    for name, records in runs.items():
        evals = [r for r in records if "fr_accuracy_by_position" in r]
        if not evals:
            continue
        last = evals[-1]
        prefix = f"{name} " if len(runs) > 1 else ""
        positions = np.arange(len(last["fr_accuracy_by_position"]))
        ax.plot(positions, last["tf_accuracy_by_position"], marker="o",
                label=f"{prefix}teacher forced ({last['split']}, step {last['step']})")
        ax.plot(positions, last["fr_accuracy_by_position"], marker="s", linestyle="--",
                label=f"{prefix}free running")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("target position")
    ax.set_ylabel("token accuracy")
    ax.set_title("exposure bias: accuracy by position")
    ax.legend(fontsize=7)
    if with_gold:
        gold_ax = axes[0, 1]
        for name, record in with_gold.items():
            rates = [np.nan if r is None else r for r in record["gold_rate_by_position"]]
            gold_ax.plot(np.arange(len(rates)), rates, marker="o",
                         label=f"{name} (train, step {record['step']})")
        gold_ax.set_ylim(-0.05, 1.05)
        gold_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        gold_ax.set_xlabel("decoder input position")
        gold_ax.set_ylabel("share read gold")
        gold_ax.set_title("realised teacher forcing by position")
        gold_ax.legend(fontsize=7)
    return fig


def _floats(values: Sequence[float | None]) -> list[float]:
    return [np.nan if v is None else v for v in values]


def recovery_figure(records: dict[str, dict]) -> Figure | None:
    """Each run's recovery curves (`diagnostics.recovery_record`): accuracy after the corrupted
    prefix relative to the clean one, by distance from the replaced token, one line per run and
    corruption. None when no record holds them."""
    runs = {name: record["recovery"] for name, record in records.items() if "recovery" in record}
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curves in runs.items():
        prefix = f"{name}: " if len(records) > 1 else ""
        for corruption, curve in curves.items():
            ax.plot(curve["distance"], _floats(curve["relative"]), marker="o",
                    label=f"{prefix}after a {corruption} token")
    ax.axhline(1.0, color="gray", linestyle=":", label="recovered (the clean accuracy)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("distance from the replaced token")
    ax.set_ylabel("accuracy relative to the clean prefix")
    ax.set_title("recovery from one corrupted token (teacher forced)")
    ax.legend(fontsize=7)
    return fig


def error_after_error_figure(records: dict[str, dict]) -> Figure | None:
    """Each run's free-running error rates (`diagnostics.error_after_error`): after no earlier
    error and after one (bars), and by distance from the latest error (lines, the rate after
    none dotted beside them). None when no record holds them."""
    runs = {name: record["error_after_error"] for name, record in records.items()
            if "error_after_error" in record}
    if not runs:
        return None
    fig, (bar_ax, distance_ax) = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(runs)
    for index, (name, rates) in enumerate(runs.items()):
        heights = _floats([rates["rate_after_clean"], rates["rate_after_error"]])
        bar_ax.bar(np.arange(2) + index * width, heights, width, label=name)
        by_distance = rates["by_distance"]
        line = distance_ax.plot(by_distance["distance"], _floats(by_distance["rate"]),
                                marker="o", label=f"{name}: after an error")[0]
        distance_ax.axhline(heights[0], color=line.get_color(), linestyle=":",
                            label=f"{name}: after none")
    bar_ax.set_xticks(np.arange(2) + 0.4 - width / 2, ["after no error", "after an error"])
    bar_ax.set_ylabel("error rate at a reference position")
    bar_ax.set_title("free-running errors after an earlier error")
    bar_ax.legend(fontsize=7)
    distance_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    distance_ax.set_xlabel("distance from the latest error")
    distance_ax.set_ylabel("error rate")
    distance_ax.set_title("error rate by distance from the latest error")
    distance_ax.legend(fontsize=7)
    return fig


def _save_figure(fig: Figure | None, path: str) -> str | None:
    return None if fig is None else _save(fig, path)


def plot_attention(workdir: str, path: str, num_examples: int = 4, layer: int = -1) -> str:
    """Heatmaps of attention for the first `num_examples` validation examples, decoded greedily
    by the latest checkpoint; `layer` picks the attention layer (Transformer cross-attention is
    averaged over heads)."""
    sources, predictions, weights = attention_examples(workdir, num_examples, layer)
    fig, axes = plt.subplots(1, len(sources), figsize=(4 * len(sources), 4), squeeze=False)
    for ax, src, pred, w in zip(axes[0], sources, predictions, weights, strict=True):
        ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(src)), src)
        ax.set_yticks(range(len(pred)), pred)
        ax.set_xlabel("source")
        ax.set_ylabel("prediction")
    fig.suptitle(f"decoder-to-source attention (layer {layer})")
    return _save(fig, path)


def attention_examples(workdir: str, num_examples: int, layer: int = -1):
    """(source tokens, predicted tokens incl. EOS, weights [pred, src]) per example, each token
    as its vocabulary's `token_text`."""
    trained = load_workdir(workdir)
    config, model, variables = trained.config, trained.model, trained.variables
    split = config.eval_splits[0] if config.eval_splits else config.final_eval_split
    data = load_task_data(config, workdir, (split,))
    src_tokens = data.splits[split].src[:num_examples]
    predicted, lengths, _ = decoding.greedy(model, variables, src_tokens, max_len=config.max_tgt_len)
    tgt_inputs = decoder_inputs(predicted, model.special_tokens.bos)
    weights = np.asarray(attention_weights(model, variables, src_tokens, tgt_inputs)[layer])
    out = []
    for row, src in enumerate(np.asarray(src_tokens)):
        src_len = int((src != data.src_vocab.special_tokens.pad).sum())
        pred_len = max(int(lengths[row]), 1)
        out.append((
            [data.src_vocab.token_text(t) for t in src[:src_len]],
            [data.tgt_vocab.token_text(t) for t in np.asarray(predicted[row, :pred_len])],
            weights[row, :pred_len, :src_len],
        ))
    return tuple(zip(*out, strict=True))


def layer_order(path: Sequence[str]) -> tuple[tuple[str | int, ...], ...]:
    """A sort key for variable paths that orders numbered layers by number: ("decoder_layers_2",)
    before ("decoder_layers_10",). Each name is split into text and digit runs, digits compared
    as ints (text and digit runs alternate, so like compares with like)."""
    return tuple(
        tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(name)))
        for name in path
    )


def attention_weights(
    model: Seq2Seq, variables: Variables, src_tokens: Array, tgt_inputs: Array
) -> list[Array]:
    """Decoder-to-source attention under teacher forcing, for plots: one [batch, tgt, src] array
    per attention layer in layer order (heads averaged), rows summing to 1 over non-pad source
    positions.

    Modules sow their attention as intermediates named "attention_weights": per step
    ([batch, src] or [batch, heads, src]) from `step`, collected here across a scan.
    """
    encoded = model.encode(variables, src_tokens)
    cache = model.init_cache(variables, encoded, tgt_inputs.shape[1])
    module = model.module

    def body(cache, inputs):
        position, prev_tokens = inputs
        (_, cache), state = module.apply(
            variables, encoded, cache, prev_tokens, position, False,
            method=type(module).step, mutable=["intermediates"],
        )
        sown = flax.traverse_util.flatten_dict(state["intermediates"])
        paths = sorted((path for path in sown if path[-1] == "attention_weights"), key=layer_order)
        per_layer = [sown[path][-1] for path in paths]
        # [batch, src] (RNN) or [batch, heads, 1, src] (Transformer) -> [batch, src]
        return cache, [w.reshape(w.shape[0], -1, w.shape[-1]).mean(1) for w in per_layer]

    positions = jnp.arange(tgt_inputs.shape[1])
    _, weights = jax.lax.scan(body, cache, (positions, tgt_inputs.T))
    return [w.transpose(1, 0, 2) for w in weights]



def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _final_table(runs: dict[str, Records]) -> list[str]:
    keys = ("loss", "token_accuracy", "fr_token_accuracy", "exact_match")
    # Text metrics (WER/PER, BLEU/chrF) get columns when some run reports them.
    reported = {k for records in runs.values() for r in records if r["split"] != "train" for k in r}
    keys += tuple(k for k in ("wer", "per", "bleu", "chrf") if k in reported)
    lines = ["| run | split | step | " + " | ".join(keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    for name, records in runs.items():
        for split in _eval_splits(records):
            last = [r for r in records if r["split"] == split][-1]
            values = " | ".join(f"{last[k]:.4f}" if k in last else "" for k in keys)
            lines.append(f"| {name} | {split} | {last['step']} | {values} |")
    return lines


def write_report(workdirs: Sequence[str], out_dir: str, attention: bool = True,
                 layer: int = -1, overwrite: bool = False) -> str:
    """Writes the PNGs and report.md into `out_dir`; returns the report's path. The directory is
    written beside itself and renamed into place (`flax_s2s.outputs`): an existing report is
    replaced only with `overwrite`, and a workdir or a directory holding one of `workdirs` never."""
    options = dict(overwrite=overwrite, writes=REPORT_FILES, protected=workdirs)
    check_output(out_dir, directory=True, **options)
    runs = {os.path.basename(os.path.normpath(w)): load_records(w) for w in workdirs}
    with writing_directory(out_dir, **options) as partial:
        figures = {
            "Curves": plot_curves(runs, os.path.join(partial, "curves.png")),
            "Teacher-forcing schedule": plot_schedule(runs, os.path.join(partial, "schedule.png")),
            "Accuracy (and gold tokens read) by target position": plot_by_position(
                runs, os.path.join(partial, "by_position.png")),
        }
        found = {name: record for name, record in
                 zip(runs, map(load_diagnostics, workdirs), strict=True) if record is not None}
        if found:
            figures["Recovery from a corrupted prefix"] = _save_figure(
                recovery_figure(found), os.path.join(partial, "recovery.png"))
            figures["Errors after errors (free running)"] = _save_figure(
                error_after_error_figure(found), os.path.join(partial, "error_after_error.png"))
        if attention and len(workdirs) == 1:
            figures["Attention"] = plot_attention(workdirs[0], os.path.join(partial, "attention.png"),
                                                  layer=layer)
        lines = [f"# Report: {', '.join(runs)}", "", "## Final metrics", "", *_final_table(runs), ""]
        for title, figure in figures.items():
            if figure is None:
                lines += [f"## {title}", "", "(not recorded by this run)", ""]
            else:
                lines += [f"## {title}", "", f"![{title}]({os.path.basename(figure)})", ""]
        with open(os.path.join(partial, "report.md"), "w") as f:
            f.write("\n".join(lines))
    return os.path.join(out_dir, "report.md")


if __name__ == "__main__":  # the former command, kept as an alias
    import runpy
    import sys

    print("python -m flax_s2s.report is now python -m flax_s2s.cli.report", file=sys.stderr)
    runpy.run_module("flax_s2s.cli.report", run_name="__main__", alter_sys=True)
