"""The GPU benchmark tools, on CPU: bench/gpu_mfu.py times the project's own jitted train step
(tiny mode). Nothing here downloads."""

import importlib.util
import os
import sys

import numpy as np

from flax_s2s import training

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gpu_mfu = _load("gpu_mfu")


def test_gpu_mfu_tiny_times_the_real_train_step(monkeypatch, capsys):
    built = []

    def jit_steps(*args, **kwargs):  # the real function; only records that it was used
        built.append(args[2])
        return real_jit_steps(*args, **kwargs)

    real_jit_steps = training.jit_steps
    monkeypatch.setattr(training, "jit_steps", jit_steps)
    result = gpu_mfu.main(["--tiny", "--dtype", "float32"])  # float32 compiles faster on CPU
    printed = capsys.readouterr().out
    assert len(built) == 1 and built[0].model.dtype == "float32"
    # compile step + warm-up step + the timed ones, all on the state train.py would build
    assert int(result["state"].step) == 2 + gpu_mfu.TINY["steps"]
    assert set(result["metrics"]) == {"loss", "grad_norm", "token_accuracy", "nonfinite_steps",
                                      "teacher_forcing_prob"}
    assert np.isfinite(result["metrics"]["loss"]) and result["metrics"]["nonfinite_steps"] == 0
    assert result["step_s"] > 0 and 0 < result["mfu"] < 1
    assert result["attention"] == "xla"  # auto, on CPU
    assert "attention: xla" in printed and "MFU" in printed
