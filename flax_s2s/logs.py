"""Where metrics go: `WORKDIR/metrics.jsonl` (one JSON object per line), TensorBoard event files
in `WORKDIR/tensorboard/` (tensorboardX: no TensorFlow needed), and a progress line."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np
import tqdm


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic) or hasattr(value, "__array__"):
        value = np.asarray(value)
        return value.item() if value.ndim == 0 else value.tolist()
    return value


def read_records(path: str) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file, skipping a last line cut short by a killed run."""
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _resumed_wall_s(path: str, resume_step: int) -> float:
    """Run time (`wall_s`) of the newest record at or before `resume_step` in an existing
    metrics file: a resumed run counts on from there. Time spent after that record by a run that
    was killed is not counted (at most one log interval)."""
    if resume_step <= 0 or not os.path.exists(path):
        return 0.0
    return max(
        (float(r["wall_s"]) for r in read_records(path)
         if r.get("step", 0) <= resume_step and "wall_s" in r),
        default=0.0,
    )


def _end_last_line(path: str) -> None:
    """A run killed mid-write leaves a line without its newline; end it so that the next record
    starts a line of its own instead of being glued to the cut one."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            f.write(b"\n")


class MetricsWriter:
    """Appends `{"step": ..., "split": ..., "wall_s": ..., **metrics}` lines to
    `WORKDIR/metrics.jsonl` and writes each scalar to TensorBoard as `<split>/<name>` (lists, e.g.
    accuracy by position, go to the JSON lines only). `enabled=False` (processes other than 0)
    writes nothing.

    `wall_s` is the run's time in seconds since it first started, added up across resumes (pass
    the restored `resume_step`, and the process's `start_time` so that data preparation and
    restoring count too), so that curves can be drawn against wall minutes."""

    def __init__(
        self, workdir: str, enabled: bool = True, resume_step: int = 0,
        start_time: float | None = None,
    ) -> None:
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self.tensorboard = None
        if enabled:
            # Imported here: tensorboardX imports torch where it is installed (about a second),
            # which readers of metrics files (the report, bench scripts) need not pay.
            from tensorboardX import SummaryWriter

            self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))
        self.start_time = time.time() if start_time is None else start_time
        self.wall_offset = _resumed_wall_s(self.path, resume_step) if enabled else 0.0
        if enabled:
            _end_last_line(self.path)

    def wall_s(self) -> float:
        return self.wall_offset + time.time() - self.start_time

    def write(self, step: int, split: str, metrics: dict[str, Any]) -> dict[str, Any]:
        record = {"step": int(step), "split": split, "wall_s": round(self.wall_s(), 2),
                  **{k: _plain(v) for k, v in metrics.items()}}
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
            for name, value in record.items():
                if name not in ("step", "split", "wall_s") and isinstance(value, int | float):
                    self.tensorboard.add_scalar(f"{split}/{name}", value, int(step))
            self.tensorboard.flush()
        return record

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


class Progress:
    """A tqdm bar with loss, steps/s and ETA on a terminal; one plain line per log interval
    otherwise (logs and CI stay readable)."""

    def __init__(self, start_step: int, total_steps: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.interactive = enabled and sys.stdout.isatty()
        self.total = total_steps
        self.start_step, self.start_time = start_step, time.time()
        self.bar = (
            tqdm.tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
            if self.interactive
            else None
        )

    def update(self, step: int) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        shown = {k: f"{v:.4g}" for k, v in metrics.items() if isinstance(v, float | int)}
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            return
        elapsed = time.time() - self.start_time
        rate = (step - self.start_step) / max(elapsed, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        fields = " ".join(f"{k}={v}" for k, v in shown.items())
        print(f"step {step}/{self.total} {fields} steps/s={rate:.2f} eta={eta:.0f}s", flush=True)

    def write(self, message: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
