"""Early stopping: a run ends when its best metric has stopped improving.

`config.early_stopping.patience` periodic evals in a row without an improvement of at least
`config.early_stopping.min_delta` on `config.best_metric` (higher or lower is better as
`config.best_mode` says) end the run: it saves a checkpoint, and its final evaluation is that of
the best checkpoint it kept (`keep_best` >= 1 keeps it).

What is kept is the history of the metric, one (step, value) per periodic eval, saved with every
checkpoint (`Checkpointer.save(..., extras=...)`); the count is recomputed from it. So a resumed
run stops at the eval an uninterrupted one would, and a resume may change `patience` or
`min_delta`: the new values apply to the whole history.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import ml_collections

from flax_s2s.errors import ConfigError

CHECKPOINT_ITEM = "eval_history"  # the checkpoint item the history is saved as


@dataclasses.dataclass
class EarlyStopping:
    """The eval history of one run and the rule that reads it; patience 0 never stops."""

    patience: int
    min_delta: float = 0.0
    mode: str = "max"  # "max": higher is better; "min": lower
    history: list[tuple[int, float]] = dataclasses.field(default_factory=list)

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, saved: dict | None = None) -> EarlyStopping:
        """The rule of `config`, with the history `to_json` saved (None: a fresh run's)."""
        history = [(int(step), float(value)) for step, value in (saved or {}).get("history", [])]
        return cls(config.early_stopping.patience, config.early_stopping.min_delta,
                   config.best_mode, history)

    def to_json(self) -> dict:
        return {"history": [[step, value] for step, value in self.history]}

    def record(self, step: int, value: float) -> None:
        """Adds the metric of the periodic eval at `step`."""
        self.history.append((int(step), float(value)))

    def improves(self, value: float, best: float) -> bool:
        """Whether `value` is better than `best` by at least min_delta (never for NaN)."""
        gain = value - best if self.mode == "max" else best - value
        return gain > 0 and gain >= self.min_delta

    def evals_without_improvement(self) -> int:
        """Periodic evals since the last one that improved on the best before it."""
        best, count = None, 0
        for _, value in self.history:
            if (not math.isnan(value)) if best is None else self.improves(value, best):
                best, count = value, 0
            else:
                count += 1
        return count

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.evals_without_improvement() >= self.patience

    def best_step(self, kept_steps: Iterable[int]) -> int | None:
        """The step of `kept_steps` (checkpoints on disk) with the best recorded metric, the
        earliest of equals; None when no kept step has one."""
        kept = set(kept_steps)
        scored = [(step, value) for step, value in self.history
                  if step in kept and not math.isnan(value)]
        if not scored:
            return None
        sign = 1.0 if self.mode == "max" else -1.0
        return max(scored, key=lambda item: (sign * item[1], -item[0]))[0]


def check_config(config: ml_collections.ConfigDict) -> None:
    """`config.early_stopping`'s fields; stopping needs the best checkpoint kept."""
    stopping = config.early_stopping
    if stopping.patience < 0:
        raise ConfigError(f"config.early_stopping.patience={stopping.patience}: must be >= 0 (0: off)")
    if stopping.min_delta < 0:
        raise ConfigError(f"config.early_stopping.min_delta={stopping.min_delta}: must be >= 0")
    if stopping.patience > 0 and config.keep_best < 1:
        raise ConfigError(
            f"config.early_stopping.patience={stopping.patience} needs config.keep_best >= 1 "
            f"(got {config.keep_best}): the final evaluation reads the best checkpoint kept"
        )
