"""`python -m flax_s2s.cli.export_pretrained --workdir DIR --out OUT [--reference REF] [--step N]`
(or `flax-s2s-export-pretrained`): a run fine-tuned from `config.pretrained` as a Hugging Face
`save_pretrained` directory (`flax_s2s.pretrained.export`). An existing OUT is refused unless
`--overwrite`, and never replaced when it is a workdir or an input (`flax_s2s.outputs`)."""

from __future__ import annotations

import argparse

from flax_s2s.errors import FileFormatError
from flax_s2s.outputs import OutputError
from flax_s2s.pretrained.export import export_workdir
from flax_s2s.workdirs import WorkdirError


def main(argv: list[str] | None = None) -> None:
    """Parses `argv` (default: the command line) and exports; bad input exits with one line."""
    parser = argparse.ArgumentParser(
        prog="python -m flax_s2s.cli.export_pretrained",
        description="Export a fine-tuned workdir as a Hugging Face save_pretrained directory.")
    parser.add_argument("--workdir", required=True, help="a run fine-tuned from config.pretrained")
    parser.add_argument("--out", required=True, help="the directory to write (an existing "
                        "one is refused unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export at "
                        "--out (never a workdir or an input)")
    parser.add_argument("--reference", default="", help="the pretrained directory whose layout to "
                        "follow (default: the run's config.pretrained)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    args = parser.parse_args(argv)
    try:
        out = export_workdir(args.workdir, args.out, args.reference, args.step, args.overwrite)
    except (FileFormatError, OutputError, WorkdirError, OSError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
