"""The GPU benchmark tools, on CPU: bench/gpu_mfu.py times the project's own jitted train step
(tiny mode), bench/train_speed.py reads a run's rate and projects a recipe's wall time,
bench/gpu_wheels.py finds the packages a host lacks from Requires-Dist with markers and extras.
Nothing here downloads."""

import os
import subprocess

import numpy as np
import pytest
from conftest import load_bench
from packaging.utils import canonicalize_name

from flax_s2s import training

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


gpu_mfu, train_speed, gpu_wheels = (load_bench(n) for n in ("gpu_mfu", "train_speed", "gpu_wheels"))


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


def _records(rates_and_steps, start=30.0, eval_s=5.0):
    """Train records every 100 steps at the given steps/s per interval, then one eval."""
    records, wall, step = [], start, 100
    records.append({"step": step, "split": "train", "wall_s": wall})
    for rate in rates_and_steps:
        step += 100
        wall += 100 / rate
        records.append({"step": step, "split": "train", "wall_s": wall})
    records.append({"step": step, "split": "validation", "wall_s": wall + eval_s})
    return records


def test_train_speed_median_rate_startup_eval_and_projection():
    # 50 steps/s, one interval slowed by a compile; the first 100 steps took 30 s (2 s of steps)
    result = train_speed.speed(_records([50, 50, 5, 50, 50]), steps=1000, eval_every=300)
    assert result["steps_per_s"] == pytest.approx(50)
    assert result["startup_s"] == pytest.approx(28.0)
    assert result["eval_s"] == pytest.approx(5.0)
    # startup + 1000 steps at 50/s + 4 evals (at 300, 600, 900 and the end)
    assert result["projected_s"] == pytest.approx(28.0 + 20.0 + 4 * 5.0)
    with pytest.raises(ValueError, match="train records"):
        train_speed.speed(_records([])[:1])


def test_train_speed_reads_a_workdir(tmp_path, capsys):
    import json

    with open(tmp_path / "metrics.jsonl", "w") as f:
        for record in _records([40, 40]):
            f.write(json.dumps(record) + "\n")
        f.write('{"step": 3')  # a line cut short
    train_speed.main([str(tmp_path), "--steps", "1000", "--eval-every", "1000", "--name", "run"])
    assert capsys.readouterr().out.startswith("run: 300 steps at 40.0 steps/s")


# A made-up index: name -> Requires-Dist lines
FAKE = {
    "app": ["lib>=1", "hostpkg[fast]", "old; python_version < '3.11'", "win; sys_platform == 'win32'",
            "testing; extra == 'test'"],
    "lib": ["hostbase", "app"],  # a cycle
    "hostpkg": ["hostbase", "hidden; extra == 'fast'", "hostpkg[core]; extra == 'fast'",
                "deep; extra == 'core'"],
    "hidden": [], "deep": [], "old": [], "win": [], "testing": [], "hostbase": [],
}


@pytest.mark.parametrize("python, expected", [("3.12", {"app", "lib", "hidden", "deep"}),
                                              ("3.10", {"app", "lib", "old", "hidden", "deep"})])
def test_wheels_resolve_markers_extras_and_host_packages(python, expected):
    plan = gpu_wheels.resolve(["app"], {"hostpkg", "hostbase"}, FAKE.get,
                              gpu_wheels.target_environment(python))
    assert set(plan.needed) == expected
    assert [str(r) for r in plan.needed["lib"]] == ["lib>=1"]


def test_wheels_report_extras_they_cannot_read():
    plan = gpu_wheels.resolve(["unknown[x]"], {"unknown"}, lambda name: None,
                              gpu_wheels.target_environment("3.12"))
    assert not plan.needed and plan.skipped_extras == ["unknown[x]"]


def test_wheels_for_this_project_are_grain_tfds_ml_collections_and_their_needs():
    """From the metadata installed here (no index): what a host with the listed packages lacks."""
    have = gpu_wheels.read_names(gpu_wheels.HOST_PACKAGES)
    assert {"jax", "flax", "optax", "orbax-checkpoint", "numpy", "absl-py"} <= have
    plan = gpu_wheels.resolve(gpu_wheels.project_requirements(), have, gpu_wheels.local_requires,
                              gpu_wheels.target_environment("3.12"))
    needed = set(plan.needed)
    assert {"grain", "tensorflow-datasets", "ml-collections", "array-record"} <= needed
    assert not needed & have
    assert all(canonicalize_name(n) == n for n in needed)


def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", os.path.join(BENCH, "gpu_check.sh")], check=True)
