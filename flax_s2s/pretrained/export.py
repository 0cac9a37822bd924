"""A fine-tuned model back to a `save_pretrained` directory that transformers loads.

```
export_pretrained(variables, "path/to/t5-small", "path/to/fine-tuned")
export_workdir("runs/t5_ft", "path/to/fine-tuned")   # a run's newest readable checkpoint
```
Export runs the architecture's rules backwards over the tensor names of the directory the model
came from, so what it writes has the reference's names, shapes and layout (float32).
"""

from __future__ import annotations

import pathlib
import shutil
from collections.abc import Sequence
from typing import Any

import flax
import numpy as np
from safetensors.numpy import save_file

from flax_s2s import lora
from flax_s2s.hf_files import (
    CONFIG_FILE,
    TOKENIZER_FILES,
    WEIGHTS_FILE,
    PretrainedError,
    architecture,
    read_config,
)
from flax_s2s.outputs import check_output, writing_directory
from flax_s2s.pretrained.load import LAYOUTS, pretrained_module
from flax_s2s.pretrained.rules import tensor_names, to_tensors
from flax_s2s.workdirs import load_workdir

# The files an export writes: an existing directory holding anything else is not one of its outputs.
EXPORTED_FILES = (CONFIG_FILE, *TOKENIZER_FILES, WEIGHTS_FILE)


def export_pretrained(
    variables: dict[str, Any], reference: str | pathlib.Path, out: str | pathlib.Path,
    overwrite: bool = False, protected: Sequence[str | pathlib.Path] = (),
) -> pathlib.Path:
    """Writes `variables` (of the model `reference`'s config.json describes, e.g. fine-tuned from
    it) as a `save_pretrained` directory `out`: config.json and the tokenizer files copied from
    `reference`, and a model.safetensors (float32) with every tensor name of `reference`'s, each
    in the reference's layout. Written beside `out` and renamed into place (`flax_s2s.outputs`):
    an existing `out` is replaced only with `overwrite` and when it is an earlier export, never
    when it is `reference`, one of `protected`, a workdir or a directory holding one. LoRA factors
    in `variables` (a train state's) are merged into the weights first."""
    reference, out = pathlib.Path(reference), pathlib.Path(out)
    protected = (reference, *protected)
    variables = lora.merged_variables(variables)
    check_output(out, directory=True, overwrite=overwrite, writes=EXPORTED_FILES,
                 protected=protected)
    layout = LAYOUTS[architecture(read_config(reference), reference)]
    params = {"/".join(path): np.asarray(value, np.float32)
              for path, value in flax.traverse_util.flatten_dict(variables["params"]).items()}
    tensors = to_tensors(layout, pretrained_module(reference), params, tensor_names(reference),
                         str(reference / WEIGHTS_FILE))
    with writing_directory(out, overwrite=overwrite, writes=EXPORTED_FILES,
                           protected=protected) as partial:
        for file in (CONFIG_FILE, *TOKENIZER_FILES):
            if (reference / file).is_file():
                shutil.copy2(reference / file, partial / file)
        save_file(tensors, partial / WEIGHTS_FILE, metadata={"format": "pt"})
    return out


def export_workdir(workdir: str, out: str, reference: str = "", step: int | None = None,
                   overwrite: bool = False) -> pathlib.Path:
    """Exports a fine-tuned workdir's checkpoint (default: the newest readable one) as a
    save_pretrained directory `out`, in the layout of `reference` (default: the run's
    `config.pretrained`). `out` is checked before anything is read (see `export_pretrained`)."""
    check_output(out, directory=True, overwrite=overwrite, writes=EXPORTED_FILES,
                 protected=(workdir, reference))
    trained = load_workdir(workdir, step)
    reference = reference or trained.config.get("pretrained", "")
    if not reference:
        raise PretrainedError(f"{workdir}: not a fine-tuned run (its config.pretrained is empty); "
                              "pass --reference=DIR, a save_pretrained directory of this model")
    if not pathlib.Path(reference).is_dir():
        raise PretrainedError(f"{reference}: no such directory (the checkpoint this run was "
                              "fine-tuned from, whose names and layout the export follows; pass "
                              "--reference=DIR)")
    return export_pretrained(trained.variables, reference, out, overwrite, protected=(workdir,))
