"""The probe table: bad inputs and faults a new user meets, each with the exit code and the one
`error:` line the command must answer with (tests/test_probes.py runs them; docs/reliability.md
lists them). Paths are written with `{root}`, the probes' directory of inputs (`make_inputs`),
`{tmp}`, the probe's own directory, and `{w}` in it, the workdir the probe's command may write
(its one allowed output)."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import os
import sys

from absl import flags

# A tiny train.py: a parallel_text task of TSV files, a small LSTM; every train probe below fails
# before anything compiles.
TRAIN = ("--config=configs/default.py", "--workdir={w}", "--config.task=parallel_text",
         "--config.data_path={root}/data", "--config.max_src_len=8", "--config.max_tgt_len=6",
         "--config.model.emb_dim=8", "--config.model.hidden_dim=8",
         "--config.model.attention_dim=8", "--config.batch_size=8", "--config.eval_batch_size=8",
         "--config.num_train_steps=2")


@dataclasses.dataclass(frozen=True)
class Probe:
    """One bad input: the command (a `flax_s2s.cli` module), its arguments, and the answer."""

    name: str
    command: str  # "train", "decode", "score", "evaluate", "report", "export"
    args: tuple[str, ...]
    pattern: str  # a regular expression the error line matches after "error: "
    code: int = 1
    fault: str = ""  # a fault set up around the command: "lock" (another trainer holds {w}),
    # "unwritable" (the directory `unwritable` cannot be written)
    unwritable: str = "{tmp}"  # with fault "unwritable": the directory denied
    writes_workdir: bool = False  # {w} may be created or changed


def _train(name: str, extra: tuple[str, ...], pattern: str, **kwargs) -> Probe:
    return Probe(name, "train", TRAIN + extra, pattern, **kwargs)


PROBES = (
    # train.py: paths
    _train("workdir is a file", ("--workdir={root}/afile",), r"workdir '.*/afile' is a file"),
    _train("workdir under a file", ("--workdir={root}/afile/run",),
           r"workdir '.*/afile/run' lies under the file '.*/afile'"),
    _train("workdir cannot be written", (), r"workdir '.*' cannot be written .*permission denied",
           fault="unwritable"),
    _train("data_dir cannot be written", ("--config.data_dir={root}/ro/tfds",),
           r"config.data_dir '.*/ro/tfds' cannot be written .*permission denied",
           fault="unwritable", unwritable="{root}/ro"),
    _train("data_dir is a file", ("--config.data_dir={root}/afile",),
           r"config.data_dir '.*/afile' is a file"),
    _train("data_dir under a file", ("--config.data_dir={root}/afile/tfds",),
           r"config.data_dir '.*/afile/tfds' lies under the file"),
    _train("data_path missing", ("--config.data_path={root}/nothing",), r".*nothing",
           writes_workdir=True),
    _train("another trainer holds the workdir", (), r".*/w is in use by a trainer: pid \d+",
           fault="lock", writes_workdir=True),
    # train.py: flags and config
    _train("config key typo", ("--config.modl.hidden_dim=3",),
           r"--config\.modl\.hidden_dim: 'modl'; Did you mean \"model\""),
    _train("config value of the wrong type", ("--config.model.hidden_dim=abc",),
           r"flag --config\.model\.hidden_dim=abc: invalid literal"),
    _train("config file missing", ("--config={root}/nothing.py",),
           r"--config: cannot be loaded .*nothing\.py"),
    _train("unknown flag", ("--bogus=1",), r"Unknown command line flag 'bogus'"),
    _train("NaN learning rate", ("--config.optimizer.learning_rate=nan",),
           r"config\.optimizer\.learning_rate=nan: must be a finite number > 0"),
    _train("infinite learning rate", ("--config.optimizer.learning_rate=inf",),
           r"config\.optimizer\.learning_rate=inf: must be a finite number > 0"),
    _train("negative steps", ("--config.num_train_steps=-1",), r"config\.num_train_steps=-1"),
    _train("keep_best on a split not evaluated", ("--config.keep_best=1",
                                                  "--config.best_metric=test/exact_match"),
           r"config\.best_metric='test/exact_match'"),
    # train.py: data
    _train("too_long=error names the file and line", ("--config.data_path={root}/long",
                                                      "--config.too_long=error"),
           r".*/long/train\.tsv:8: source length 11 .*config\.too_long='drop'",
           writes_workdir=True),
    _train("no training example fits", ("--config.max_src_len=2",),
           r"split 'train': none of its 40 example\(s\) fits max_src_len=2", writes_workdir=True),
    _train("a bad TSV line", ("--config.data_path={root}/badline",),
           r".*/badline/train\.tsv:3: 1 columns, the header has 2", writes_workdir=True),
    # decode, score, evaluate, report, export before a model loads
    Probe("decode: workdir missing", "decode", ("--workdir={root}/nothing",),
          r"--workdir '.*nothing' does not exist"),
    Probe("decode: input missing", "decode", ("--workdir={root}/empty", "--input={root}/nothing"),
          r"cannot read --input '.*nothing'"),
    Probe("decode: negative min_len", "decode", ("--workdir={root}/empty", "--min_len=-1"),
          r"--min_len=-1"),
    Probe("decode: NaN alpha", "decode", ("--workdir={root}/empty", "--alpha=nan"),
          r"--alpha=nan: must be a finite number"),
    Probe("decode: no checkpoint", "decode", ("--workdir={root}/empty", "--input={root}/src.txt"),
          r"no checkpoint in '.*empty/checkpoints'"),
    Probe("score: unequal line counts", "score", ("--workdir={root}/empty",
                                                  "--input={root}/src.txt",
                                                  "--targets={root}/one.txt"),
          r"--input has 3 lines but --targets has 1"),
    Probe("score: targets missing", "score", ("--workdir={root}/empty", "--input={root}/src.txt",
                                              "--targets={root}/nothing"),
          r"cannot read --targets '.*nothing'"),
    Probe("evaluate: no checkpoint", "evaluate", ("--workdir={root}/empty",
                                                  "--data={root}/lexicon.tsv"),
          r"no checkpoint in"),
    Probe("report: no metrics.jsonl", "report", ("--workdir={root}/empty",),
          r".*empty/metrics\.jsonl does not exist"),
    Probe("report: neither workdir nor compare", "report", (),
          r"give exactly one of --workdir or --compare"),
    Probe("report: compare without out", "report", ("--compare={root}/empty",),
          r"--compare needs --out"),
    Probe("export: no checkpoint", "export", ("--workdir={root}/empty", "--out={root}/out.s2s"),
          r"no checkpoint in"),
)


def make_inputs(root: str) -> None:
    """The files the probes read: a tiny addition task as TSV (and a copy with a pair too long at
    line 8, one with a bad line 3), a plain file, an empty workdir, text and lexicon lines."""

    def write(path: str, text: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    pairs = [(f"{a}+{b}", str(a + b)) for a, b in zip(range(0, 80, 2), range(40), strict=True)]
    for split, rows in (("train", pairs), ("validation", pairs[:8]), ("test", pairs[8:16])):
        body = "".join(f"{s}\t{t}\n" for s, t in rows)
        write(f"{root}/data/{split}.tsv", "source\ttarget\n" + body)
        long = body if split != "train" else "".join(f"{s}\t{t}\n" for s, t in rows[:6]) + (
            "123456789+1\t123456790\n")
        write(f"{root}/long/{split}.tsv", "source\ttarget\n" + long)
        lines = body.splitlines(keepends=True)
        if split == "train":
            lines.insert(1, "notab\n")  # line 3, after the header and one pair
        write(f"{root}/badline/{split}.tsv", "source\ttarget\n" + "".join(lines))
    write(f"{root}/afile", "not a directory\n")
    os.makedirs(f"{root}/empty")
    os.makedirs(f"{root}/ro")
    write(f"{root}/src.txt", "1+2\n3+4\n5+6\n")
    write(f"{root}/one.txt", "3\n")
    write(f"{root}/lexicon.tsv", "ABC\tA B C\n")


def run_command(command: str, argv: list[str]) -> tuple[int, str, str]:
    """(exit code, its message, what it printed): `flax_s2s.cli.<command>.run()` with `argv`,
    as its console script runs it; the flags it defined are removed after."""
    module = importlib.import_module(f"flax_s2s.cli.{command}")
    defined, saved_argv = set(flags.FLAGS), sys.argv
    sys.argv = [command, *argv]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(printed):
            module.run()
        code, message = 0, ""
    except SystemExit as exit_:
        code, message = (1, exit_.code) if isinstance(exit_.code, str) else (exit_.code or 0, "")
    finally:
        sys.argv = saved_argv
        for name in set(flags.FLAGS) - defined:
            delattr(flags.FLAGS, name)
        flags.FLAGS.unparse_flags()
    return code, message, printed.getvalue()
