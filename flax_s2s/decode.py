"""`python -m flax_s2s.decode`: the former name of the decode CLI, `python -m flax_s2s.infer`.

Kept as an alias for one release, with its library names (`load_trained_model` is now
`flax_s2s.workdir.load_workdir`, `DecodeError` is `WorkdirError`); it will be removed.
"""

from __future__ import annotations

import sys

from flax_s2s.infer import decode_lines, encode_lines, run
from flax_s2s.workdirs import TrainedModel, WorkdirError
from flax_s2s.workdirs import load_workdir as load_trained_model

DecodeError = WorkdirError

__all__ = ["DecodeError", "TrainedModel", "decode_lines", "encode_lines", "load_trained_model"]

if __name__ == "__main__":
    print("flax_s2s.decode is now flax_s2s.infer; this alias will be removed", file=sys.stderr)
    run()
