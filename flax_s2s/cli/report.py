"""`python -m flax_s2s.cli.report --workdir DIR` (or `flax-s2s-report`): a run's pictures and
`DIR/report/report.md`; `--compare DIR1 DIR2 ... --out DIR` overlays runs (`flax_s2s.report`).
An existing report directory is replaced only with `--overwrite`."""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import app, flags

from flax_s2s.outputs import OutputError
from flax_s2s.report import write_report
from flax_s2s.workdirs import WorkdirError


def define_flags() -> None:
    """The command's flags, defined only when it runs (see `flax_s2s.cli`)."""
    flags.DEFINE_string("workdir", None, "A run's workdir; the report goes to WORKDIR/report.")
    flags.DEFINE_list("compare", None, "Workdirs to overlay (needs --out).")
    flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/report).")
    flags.DEFINE_integer(
        "layer", -1, "Attention layer to draw, by layer number (Transformer; -1: the last)."
    )
    flags.DEFINE_bool("overwrite", False, "Replace an earlier report at the output directory.")


def main(argv: Sequence[str]) -> None:
    del argv
    args = flags.FLAGS
    if bool(args.workdir) == bool(args.compare):
        raise SystemExit("error: give exactly one of --workdir or --compare")
    if args.compare and not args.out:
        raise SystemExit("error: --compare needs --out, the directory of the overlaid report")
    try:
        if args.compare:
            report = write_report(args.compare, args.out, attention=False, overwrite=args.overwrite)
        else:
            out = args.out or os.path.join(args.workdir, "report")
            report = write_report([args.workdir], out, layer=args.layer, overwrite=args.overwrite)
    except (OutputError, OSError, ValueError, WorkdirError) as error:  # no metrics, a bad --out
        raise SystemExit(f"error: {error}") from None
    print(f"wrote {report}")


def run() -> None:
    """The command: `python -m flax_s2s.cli.report ...`, `flax-s2s-report ...`."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
