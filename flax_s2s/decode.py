"""`python -m flax_s2s.decode`: the oldest name of the decode command, now
`python -m flax_s2s.cli.decode`.

Kept as an alias for one release, with its library names (`load_trained_model` is now
`flax_s2s.workdirs.load_workdir`, `DecodeError` is `WorkdirError`); it will be removed.
"""

from __future__ import annotations

from flax_s2s.infer import decode_lines, encode_lines
from flax_s2s.workdirs import TrainedModel, WorkdirError
from flax_s2s.workdirs import load_workdir as load_trained_model

DecodeError = WorkdirError

__all__ = ["DecodeError", "TrainedModel", "decode_lines", "encode_lines", "load_trained_model"]

if __name__ == "__main__":  # the former command, kept as an alias
    import runpy
    import sys

    print("python -m flax_s2s.decode is now python -m flax_s2s.cli.decode; this alias will be "
          "removed", file=sys.stderr)
    runpy.run_module("flax_s2s.cli.decode", run_name="__main__", alter_sys=True)
