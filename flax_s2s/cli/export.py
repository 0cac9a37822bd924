"""`python -m flax_s2s.cli.export --workdir DIR --out FILE [--batch_size B] [--beam K]` (or
`flax-s2s-export`): a workdir's greedy and beam-search decoders, weights included, as one
jax.export file (`flax_s2s.export`; `flax_s2s.exported` runs it). An existing FILE is refused
unless `--overwrite` (and then replaced only when it is an export file)."""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from flax_s2s.cli import common
from flax_s2s.export import check_out, export_trained
from flax_s2s.workdirs import WorkdirError, load_workdir


def main(argv: Sequence[str]) -> None:
    common.start(argv)
    args = flags.FLAGS
    try:
        check_out(args.out, args.overwrite, [args.workdir])  # before the workdir is read
        trained = load_workdir(args.workdir, args.step)
        export_trained(trained, args.out, args.batch_size, args.beam, args.platforms or None,
                       args.overwrite, [args.workdir])
    except (ValueError, OSError, ImportError, WorkdirError) as error:  # FileFormatError, OutputError
        raise SystemExit(f"error: {error}") from None
    print(f"wrote {args.out}: greedy and beam {args.beam} for batch {args.batch_size}, "
          f"checkpoint step {trained.step}")


def define_flags() -> None:
    """The command's flags, defined only when it runs (see `flax_s2s.cli`)."""
    flags.DEFINE_string("workdir", None, "A training workdir with checkpoints.")
    flags.DEFINE_string("out", None, "The file to write (an existing one is refused unless "
                        "--overwrite).")
    flags.DEFINE_bool("overwrite", False, "Replace an earlier export file at --out.")
    flags.DEFINE_integer("batch_size", 64, "The batch size the exported functions take.")
    flags.DEFINE_integer("beam", 4, "The exported beam search's width.")
    flags.DEFINE_integer("step", None, "Checkpoint step to export (default: the newest).")
    flags.DEFINE_list("platforms", [], "Platforms to export for (default: this machine's), "
                      "e.g. cpu,cuda.")
    flags.mark_flags_as_required(["workdir", "out"])


def run() -> None:
    """The command: `python -m flax_s2s.cli.export ...`, `flax-s2s-export ...`."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
