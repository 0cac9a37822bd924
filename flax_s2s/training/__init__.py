"""Training, one module a job (as T5X keeps train state, trainer and CLI apart):

- `state`: `TrainState` and the optimizer;
- `step`: the train step (loss sums, microbatches, the moving average, the non-finite guard);
- `evaluation`: `Evaluator` and `evaluate`, usable without the loop;
- `setup`: data, model, state (fresh, resumed, warm-started or pretrained) and the jitted steps;
- `loop`: the loop with its logs, evals and checkpoints; `trainer`: `run(config, workdir)`;
- `config`: `validate_config` / `prepare_config`, the run's config checked at the edge.

The package's public names are importable from it directly (`training.run`,
`training.make_train_step`, ...); each is loaded from its module on first use, so importing one
module (`flax_s2s.training.evaluation`) loads no other.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it
_PUBLIC = {
    **dict.fromkeys(("TrainState", "abstract_train_state", "create_train_state", "make_optimizer"),
                    "state"),
    **dict.fromkeys(("accumulated_gradients", "make_batch_sums", "make_train_step",
                     "split_microbatches"), "step"),
    **dict.fromkeys(("Evaluator", "evaluate", "make_eval_step", "make_evaluator"), "evaluation"),
    **dict.fromkeys(("RunSetup", "Steps", "final_eval_splits", "jit_steps", "prepare_run"),
                    "setup"),
    **dict.fromkeys(("NonFiniteError", "summarize"), "loop"),
    "run": "trainer",
    **dict.fromkeys(("prepare_config", "validate_config"), "config"),
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
