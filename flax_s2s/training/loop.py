"""The training loop: train steps, logging, periodic evals, checkpoints, signals, early stopping,
and the final evaluation (`flax_s2s.training.trainer.run` is its entry)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from flax_s2s import config_checks, early_stopping, sharding
from flax_s2s.data import pipeline
from flax_s2s.data.pretrained_tokenizer import forced_bos_id
from flax_s2s.early_stopping import EarlyStopping
from flax_s2s.errors import ConfigError
from flax_s2s.forcing import TeacherForcing
from flax_s2s.logs import MetricsWriter, Progress, read_records
from flax_s2s.signals import GracefulStop
from flax_s2s.training.evaluation import evaluate
from flax_s2s.training.setup import RunSetup, Steps, final_eval_splits, jit_steps, prepare_run
from flax_s2s.training.state import TrainState

Array = jax.Array


class NonFiniteError(RuntimeError):
    """Training met a non-finite loss or gradient under nonfinite_policy="stop"."""


def train(config: ml_collections.ConfigDict, workdir: str, start_time: float) -> dict[str, Any]:
    """Sets the run up (`setup.prepare_run`), trains and evaluates it; `trainer.run` once the
    config is valid and the workdir this run's. Returns as `run` does."""
    mesh = sharding.make_mesh(config.mesh_shape)
    os.makedirs(workdir, exist_ok=True)
    final_splits = final_eval_splits(config)
    setup = prepare_run(config, workdir, mesh, final_splits)
    forcing = TeacherForcing.from_config(config.teacher_forcing)
    first = forced_bos_id(setup.data.tgt_vocab, config.get("forced_bos", ""))  # None: none
    steps = jit_steps(setup.model, setup.tx, config, mesh, setup.state_shardings, forcing,
                      -1 if first is None else first, setup.teachers)
    loop = _Loop(config, workdir, setup, steps, forcing, final_splits, start_time)
    with GracefulStop() as stop:
        loop.train(stop)
    if stop.requested:
        return loop.stopped(stop.signal_name)
    return loop.finish()


class _Loop:
    """One run's loop over its train steps, with what it logs, evaluates and saves.

    Every process runs the same loop (each step is one program over all devices); only
    process 0 prints and writes metrics. Checkpoints are written by all processes together.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, setup: RunSetup,
                 steps: Steps, forcing: TeacherForcing, final_splits: Sequence[str],
                 start_time: float) -> None:
        self.config, self.setup, self.steps, self.forcing = config, setup, steps, forcing
        self.final_splits, self.start_time = tuple(final_splits), start_time
        self.state: TrainState = setup.state
        self.step = int(self.state.step)
        self.stopping: EarlyStopping = setup.early_stopping
        self.config_dict = json.loads(config.to_json())
        # each unique source of a split, decoded once an eval
        self.grouped = {split: pipeline.group_references(setup.data.splits[split])
                        for split in self.final_splits}
        is_main = jax.process_index() == 0
        self.resumed_step, self.warned_best = self.step, False
        metrics = os.path.join(workdir, "metrics.jsonl")
        if is_main and self.step > 0 and not os.path.exists(metrics):
            print(f"warning: resuming at step {self.step}, but {metrics} is missing: the records "
                  "before this step are gone; the new ones start the file again")
        self.writer = MetricsWriter(workdir, enabled=is_main, resume_step=self.step,
                                    start_time=start_time)
        self.progress = Progress(self.step, config.num_train_steps, enabled=is_main)
        self.history: list[dict[str, Array]] = []

    def train(self, stop: GracefulStop) -> None:
        """Steps until `num_train_steps`, a signal or early stopping; logs, evals and saves on
        the way."""
        config = self.config
        while (self.step < config.num_train_steps and not stop.requested
               and not self.stopping.should_stop):
            self.state, step_metrics = self.steps.train(self.state, next(self.setup.data_iterator))
            self.step += 1
            self.history.append(step_metrics)
            self.progress.update(self.step)
            last = self.step == config.num_train_steps
            is_eval = self.step % config.eval_every == 0 and not last
            is_save = (self.step % config.checkpoint_every == 0 or last or stop.requested
                       or (is_eval and config.keep_best > 0))
            if self.step % config.log_every == 0 or last or is_save:
                self._log()
            metric = self._periodic_eval() if is_eval else None
            if is_save:
                self._save(metric)
        self.progress.close()
        self._save()  # a no-op when this step is saved already

    def _log(self) -> None:
        """Writes the means over the interval since the last log; stops a run with non-finite
        steps under nonfinite_policy="stop"."""
        logged = summarize(self.history)
        self.history = []
        if logged["nonfinite_steps"] and self.config.nonfinite_policy == "stop":
            raise NonFiniteError(
                f"non-finite loss or gradient in {logged['nonfinite_steps']} step(s) up "
                f"to step {self.step}; stopping (nonfinite_policy='stop'). The newest "
                f"checkpoint in {self.setup.checkpointer.directory} is the last good one."
            )
        self.writer.write(self.step, "train", logged)
        self.progress.log(self.step, logged)

    def _periodic_eval(self) -> float | None:
        """Evaluates every `eval_splits` split; returns `best_metric` (None when no split
        reports it) after adding it to the early-stopping history."""
        best_split, best_name = self.config.best_metric.split("/")
        metric, reported = None, []
        for split in self.config.eval_splits:
            result = self.evaluate_split(split, f"step {self.step} {split}", self.state)
            if split == best_split:
                metric, reported = result.get(best_name), sorted(result)
        _record_best_metric(self.stopping, self.step, metric, self.config)
        if metric is None and self.config.keep_best > 0 and not self.warned_best:
            self.warned_best = True
            self.progress.write(f"warning: config.best_metric={self.config.best_metric!r}: the eval "
                                f"at step {self.step} reports no such metric (it reports "
                                f"{reported}), so config.keep_best={self.config.keep_best} keeps "
                                "no checkpoint for it")
        return metric

    def _save(self, metric: float | None = None) -> None:
        if not _params_finite(self.state.params):
            raise NonFiniteError(f"step {self.step}: parameters are not finite; not saving them")
        self.setup.checkpointer.save(
            self.step, self.state, self.setup.data_iterator, self.config_dict, metric=metric,
            extras={early_stopping.CHECKPOINT_ITEM: self.stopping.to_json()},
        )

    def evaluate_split(self, split: str, label: str, evaluated: TrainState,
                       **extra: Any) -> dict[str, Any]:
        """Evaluates `evaluated` on `split`, writes the record (with `extra`) and prints
        `label: ...`."""
        config = self.config
        result = evaluate(self.steps.evaluator, evaluated.eval_variables(config.eval_with_ema),
                          self.setup.data.splits[split], config.eval_batch_size,
                          config.text_metrics, self.setup.data.tgt_vocab, self.grouped[split])
        result["teacher_forcing_prob"] = float(self.forcing.prob(self.step))
        result.update(extra)
        self.writer.write(self.step, split, result)
        self.progress.write(f"{label}: " + _format(result))
        return result

    def stopped(self, signal_name: str) -> dict[str, Any]:
        """The result of a run a signal ended (saved, not evaluated)."""
        self.setup.checkpointer.close()
        self.writer.close()
        self.progress.write(f"stopped by {signal_name} at step {self.step}; checkpoint saved in "
                            f"{self.setup.checkpointer.directory}/{self.step}")
        return {"step": self.step, "final": {}, "wall_time_s": time.time() - self.start_time,
                "stopped_by": signal_name}

    def finish(self) -> dict[str, Any]:
        """The final evaluation on every final split: of the state trained to the end, or, after
        early stopping, of the best kept checkpoint."""
        evaluated, extra, stopped_by = self.state, {}, None
        checkpointer = self.setup.checkpointer
        recorded = self._recorded_final() if self.step == self.resumed_step else None
        if recorded is not None:  # a rerun of a finished run: nothing trained, nothing to add
            checkpointer.close()
            self.writer.close()
            self.progress.write(f"the run finished at step {self.step} already; its final "
                                f"evaluation is in {self.writer.path} (not repeated)")
            return {"step": self.step, "final": recorded,
                    "wall_time_s": time.time() - self.start_time,
                    "stopped_by": "early_stopping" if self.stopping.should_stop else None}
        if self.stopping.should_stop:
            best_step = self.stopping.best_step(checkpointer.all_steps())
            self.progress.write(_early_stopping_message(self.stopping, self.config, self.step,
                                                        best_step))
            if best_step is not None:  # None: no kept checkpoint has an eval (keep_best is >= 1)
                evaluated = checkpointer.restore(self.setup.state_template, step=best_step,
                                                 set_aside=False)
            extra = {"checkpoint_step": self.step if best_step is None else best_step}
            stopped_by = "early_stopping"
        checkpointer.close()
        final = {split: self.evaluate_split(split, f"final {split} (step {self.step})", evaluated,
                                            **extra)
                 for split in self.final_splits}
        self.writer.close()
        wall_time = time.time() - self.start_time
        self.progress.write(f"wall time: {wall_time:.1f}s")
        return {"step": self.step, "final": final, "wall_time_s": wall_time,
                "stopped_by": stopped_by}


    def _recorded_final(self) -> dict[str, dict[str, Any]] | None:
        """The final records of every final split at this step in metrics.jsonl, or None when
        one is missing (the periodic evals skip the last step, so a record there is final; after
        early stopping the final ones name their `checkpoint_step`)."""
        if not os.path.exists(self.writer.path):
            return None
        found = {(r.get("step"), r.get("split")): r for r in read_records(self.writer.path)
                 if "checkpoint_step" in r or not self.stopping.should_stop}
        final = {split: found.get((self.step, split)) for split in self.final_splits}
        return None if None in final.values() else final


NONFINITE_POLICIES = ("skip", "stop")  # config.nonfinite_policy


def check_config(config: ml_collections.ConfigDict) -> None:
    """The loop's fields: its intervals, the non-finite policy, the metric that picks the best
    checkpoint."""
    config_checks.positive(config, "num_train_steps", "log_every", "eval_every", "checkpoint_every")
    config_checks.one_of(config, "nonfinite_policy", NONFINITE_POLICIES)
    split, _, metric = config.best_metric.partition("/")
    if config.keep_best > 0 and (split not in config.eval_splits or not metric):
        raise ConfigError(
            f"config.best_metric={config.best_metric!r}: must be 'split/metric' with split in "
            f"config.eval_splits={list(config.eval_splits)}"
        )


_COUNTS_BY_POSITION = ("gold_by_position", "tokens_by_position")


def summarize(history: list[dict[str, Array]]) -> dict[str, Any]:
    """Means over a log interval; `nonfinite_steps` is a count; under scheduled sampling,
    `gold_rate_by_position` is the share of real tokens read gold at each decoder position over
    the interval (None where no token was). One host sync per interval."""
    stacked = jax.device_get(history)
    scalars = [k for k in stacked[0] if k not in _COUNTS_BY_POSITION]
    summary: dict[str, Any] = {k: float(np.mean([h[k] for h in stacked])) for k in scalars}
    summary["nonfinite_steps"] = int(sum(h["nonfinite_steps"] for h in stacked))
    if "gold_by_position" in stacked[0]:
        gold, tokens = (np.sum([h[k] for h in stacked], axis=0) for k in _COUNTS_BY_POSITION)
        summary["gold_rate_by_position"] = [
            float(g / n) if n > 0 else None for g, n in zip(gold, tokens, strict=True)
        ]
    return summary


def _params_finite(params: Any) -> bool:
    return bool(jax.tree.reduce(lambda ok, x: ok & jnp.isfinite(x).all(), params, jnp.asarray(True)))


def _record_best_metric(
    stopping: EarlyStopping, step: int, metric: float | None, config: ml_collections.ConfigDict
) -> None:
    """Adds this eval's `config.best_metric` to the early-stopping history (always: a resume may
    turn early stopping on); under early stopping a metric the eval lacks is an error."""
    if metric is None:
        if stopping.patience > 0:
            raise ConfigError(f"config.best_metric={config.best_metric!r}: the eval at step "
                              f"{step} reports no such metric, so early stopping cannot read it")
        return
    stopping.record(step, metric)


def _early_stopping_message(
    stopping: EarlyStopping, config: ml_collections.ConfigDict, step: int, best_step: int | None
) -> str:
    """Why the run stopped, and which checkpoint the final evaluation reads."""
    return (f"early stopping at step {step}: {config.best_metric} has not improved by at least "
            f"{stopping.min_delta} in {stopping.evals_without_improvement()} evals "
            f"(config.early_stopping.patience={stopping.patience}); final evaluation on the best "
            f"kept checkpoint, step {best_step}")


def _format(result: dict[str, Any]) -> str:
    """The scalar metrics on one line (the by-position lists are in metrics.jsonl)."""
    return " ".join(f"{k}={v:.4f}" for k, v in result.items() if isinstance(v, float))
