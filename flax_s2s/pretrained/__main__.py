"""`python -m flax_s2s.pretrained`: the former export command, kept as an alias of
`python -m flax_s2s.cli.export_pretrained`."""

import runpy
import sys

print("python -m flax_s2s.pretrained is now python -m flax_s2s.cli.export_pretrained",
      file=sys.stderr)
runpy.run_module("flax_s2s.cli.export_pretrained", run_name="__main__", alter_sys=True)
