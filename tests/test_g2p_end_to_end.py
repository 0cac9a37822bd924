"""G2P end to end: config checks, a tiny training run reporting WER/PER, the evaluate CLI."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROLLED, ROOT, tiny_config
from lexicon_fixture import lexicon_pairs, write_lexicon
from probes import run_command

from configs import g2p_lstm
from flax_s2s import evaluate, training, workdirs
from flax_s2s.checkpoint import Checkpointer
from flax_s2s.data import cmudict_g2p
from flax_s2s.training.config import ConfigError, validate_config


def test_g2p_config_is_valid_and_points_at_the_standard_split_by_a_relative_path():
    config = g2p_lstm.get_config()
    assert config.data_path == "../shared/data/g2p/g014b2b.train"
    if os.path.exists(os.path.join(ROOT, config.data_path)):
        validate_config(config)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"task": "cmudict_g2p", "data_path": ""}, "config.data_path is empty"),
        ({"task": "cmudict_g2p", "data_path": "no/such/file.txt"}, r"config.data_path='no/such/file.txt'"),
        ({"task": "parallel_text", "data_path": "tests"}, None),  # a directory: accepted
        ({"task": "tfds"}, "config.tfds_name is empty"),
        ({"task": "nope"}, "config.task='nope'"),
        ({"bucket_boundaries": (8, 4)}, "config.bucket_boundaries"),
        ({"text_metrics": ("wer", "ter")}, "config.text_metrics"),
        ({"vocab.type": "bytes"}, "config.vocab.type"),
    ],
)
def test_data_config_errors_name_the_key(overrides, message):
    config = tiny_config(**overrides)
    if message is None:
        validate_config(config)
        return
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_cmudict_g2p_has_no_test_split(tmp_path):
    lexicon = write_lexicon(tmp_path / "lexicon.txt", lexicon_pairs(50))
    config = tiny_config(task="cmudict_g2p", data_path=str(lexicon))
    with pytest.raises(ConfigError, match=r"config.final_eval_split='test'.*only splits"):
        validate_config(config)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny G2P model trained for a few steps on the fixture lexicon."""
    tmp = tmp_path_factory.mktemp("g2p_run")
    lexicon = write_lexicon(tmp / "lexicon.txt", lexicon_pairs(400))
    config = tiny_config(
        task="cmudict_g2p", data_path=str(lexicon), data_dir=str(tmp / "tfds"), **ROLLED,
        final_eval_split="validation", num_train_steps=20, eval_every=1000,
        checkpoint_every=10, text_metrics=("wer", "per"),
    )
    config.vocab.tgt_separator = " "
    config.optimizer.learning_rate = 1e-2
    workdir = tmp / "run"
    result = training.run(config, str(workdir))
    return lexicon, workdir, result


@pytest.mark.slow
def test_training_reports_wer_and_per_and_the_cli_reproduces_them(trained, tmp_path):
    lexicon, workdir, result = trained
    final = result["final"]["validation"]
    assert 0.0 <= final["wer"] <= 100.0 and final["per"] >= 0.0
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert any(r["split"] == "validation" and "wer" in r and "per" in r for r in records)

    # The validation split written as a lexicon file: the CLI must score it as training did.
    validation = [(w, p) for w, p in cmudict_g2p.read_lexicon(lexicon)
                  if cmudict_g2p.split_of(w, with_test=False) == "validation"]
    data = write_lexicon(tmp_path / "validation.txt", validation)
    command = [sys.executable, "-m", "flax_s2s.evaluate", f"--workdir={workdir}", f"--data={data}"]
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.rsplit(" ", 1) for line in out.stdout.splitlines()[1:])
    assert float(lines["WER"].rstrip("%")) == pytest.approx(final["wer"], abs=0.01)
    assert float(lines["PER"].rstrip("%")) == pytest.approx(final["per"], abs=0.01)
    assert float(lines["exact match"].rstrip("%")) == pytest.approx(100 - final["wer"], abs=0.01)
    assert f"{len({w for w, _ in validation})} words" in out.stdout

    # The run's own validation split, read through its config: the same words, the same scores.
    # with the exposure-bias diagnostics recorded beside (flax_s2s.diagnostics)
    own_split = [sys.executable, "-m", "flax_s2s.evaluate", f"--workdir={workdir}", "--split=validation"]
    record = tmp_path / "diagnostics" / "record.json"
    out = subprocess.run([*own_split, "--diagnose=recovery,error_after_error",
                          f"--diagnostics_out={record}"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.rsplit(" ", 1) for line in out.stdout.splitlines()[1:4])
    assert float(lines["WER"].rstrip("%")) == pytest.approx(final["wer"], abs=0.01)
    assert f"{len({w for w, _ in validation})} words" in out.stdout
    assert f"wrote {record}" in out.stdout and "recovery after a wrong token" in out.stdout
    saved = json.loads(record.read_text())
    assert saved["source"] == "split 'validation'" and saved["decoding"] == "greedy"
    assert set(saved["recovery"]) == {"wrong", "random"} and len(saved["recovery"]["wrong"]["distance"]) == 10
    lengths = {}  # each word's outputs aligned to one of its pronunciations
    for word, phones in validation:
        lengths.setdefault(word, []).append(len(phones.split()))
    rates = saved["error_after_error"]
    positions = rates["positions_after_clean"] + rates["positions_after_error"]
    assert sum(map(min, lengths.values())) <= positions <= sum(map(max, lengths.values()))

    # The rest through the command's run() in this process, as its console script runs it.
    def run_evaluate(*flags: str) -> tuple[int, str]:
        """(exit code, its message and then what it printed)."""
        code, message, printed = run_command("evaluate", [f"--workdir={workdir}", *flags])
        return code, f"{message}\n{printed}"

    code, out = run_evaluate(f"--data={data}", "--split=validation")
    assert code != 0 and "exactly one of (data, split)" in out.lower()

    headers = {"--step=10": "checkpoint step 10,", "--average=2": "mean of checkpoints 10, 20,"}
    for flag, header in headers.items():
        code, out = run_evaluate("--split=validation", flag)
        assert code == 0, out[-3000:]
        assert header in out.splitlines()[1], out  # the first line printed

    code, out = run_evaluate(f"--data={data}", "--average=3")
    assert code != 0 and "cannot average 3 checkpoints up to step 20" in out, out[-2000:]

    code, out = run_evaluate(f"--data={data}", "--beam=-1")
    assert code != 0 and "beam size must be >= 0" in out


@pytest.mark.slow
def test_checkpoint_averaging_is_the_elementwise_mean_of_the_kept_checkpoints(trained):
    _, workdir, _ = trained
    checkpointer = Checkpointer(str(workdir / "checkpoints"))
    assert checkpointer.all_steps() == [10, 20]
    saved = {step: checkpointer.restore_variables(step)["params"] for step in (10, 20)}
    checkpointer.close()

    averaged = workdirs.load_workdir(str(workdir), average=2)
    assert (averaged.step, averaged.averaged_steps) == (20, (10, 20))
    leaves = zip(*(jax.tree.leaves(tree) for tree in (averaged.variables["params"], saved[10], saved[20])),
                 strict=True)
    moved = 0
    for mean, at_10, at_20 in leaves:
        np.testing.assert_allclose(mean, (np.asarray(at_10) + np.asarray(at_20)) / 2, rtol=1e-6, atol=1e-7)
        moved += not np.array_equal(at_10, at_20)
    assert moved > 0, "ten training steps should have changed the parameters"

    step_10 = workdirs.load_workdir(str(workdir), step=10)
    assert step_10.averaged_steps == (10,)
    for restored, expected in zip(jax.tree.leaves(step_10.variables["params"]), jax.tree.leaves(saved[10]),
                                  strict=True):
        np.testing.assert_array_equal(restored, expected)

    with pytest.raises(workdirs.WorkdirError, match=r"no checkpoint for step 15 .*saved steps: \[10, 20\]"):
        workdirs.load_workdir(str(workdir), step=15)
    with pytest.raises(workdirs.WorkdirError,
                       match=r"cannot average 2 checkpoints up to step 10: .*\(\[10\]\)"):
        workdirs.load_workdir(str(workdir), step=10, average=2)
    with pytest.raises(workdirs.WorkdirError, match=r"average=0: must be >= 1"):
        workdirs.load_workdir(str(workdir), average=0)


@pytest.mark.slow
def test_readers_skip_an_unreadable_newest_checkpoint_and_leave_the_workdir_as_it_is(trained, tmp_path):
    _, workdir, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    shutil.rmtree(copy / "checkpoints" / "20" / "state")  # as a crash mid-write could leave it
    before = sorted(os.listdir(copy / "checkpoints"))

    with pytest.warns(UserWarning, match="checkpoint .*20 is unreadable"):
        trained_model = workdirs.load_workdir(str(copy))
    assert trained_model.averaged_steps == (10,)
    # A trainer may still own this workdir: a reader renames nothing (a resuming run does).
    assert sorted(os.listdir(copy / "checkpoints")) == before

    with pytest.raises(workdirs.WorkdirError, match="checkpoint 20 in .* is unreadable"):
        workdirs.load_workdir(str(copy), step=20)


@pytest.mark.slow
def test_an_ensemble_of_a_run_with_itself_scores_as_the_run_and_vocabularies_must_match(trained, tmp_path):
    _, workdir, result = trained
    scores = evaluate.evaluate_lexicon(str(workdir), None, split="validation", ensemble=(str(workdir),))
    assert scores["wer"] == pytest.approx(result["final"]["validation"]["wer"], abs=1e-9)
    assert scores["per"] == pytest.approx(result["final"]["validation"]["per"], abs=1e-9)

    # A copy whose phone ids are permuted: same shapes, so it loads, but it speaks another code.
    other = tmp_path / "other"
    shutil.copytree(workdir, other)
    vocab_file = other / "tgt_vocab.json"
    saved = json.loads(vocab_file.read_text())
    saved["symbols"][:2] = saved["symbols"][1::-1]
    vocab_file.write_text(json.dumps(saved))
    with pytest.raises(workdirs.WorkdirError, match=f"--ensemble {other}: its tgt_vocab differs"):
        evaluate.evaluate_lexicon(str(workdir), None, split="validation", ensemble=(str(other),))
    with pytest.raises(ValueError, match="--step picks one run's checkpoint"):
        evaluate.evaluate_lexicon(str(workdir), None, split="validation", step=10,
                                  ensemble=(str(workdir),))


def test_mean_variables_averages_floats_in_their_dtype_and_keeps_the_newest_integers():
    rng = np.random.default_rng(0)
    # bfloat16 column 0 holds 256, 1, 1: summed in bfloat16 (8 significant bits) 256 + 1 rounds
    # back to 256 and the mean comes out 85.5, not 86; the other columns are random.
    half = np.concatenate([[[256.0], [1.0], [1.0]], rng.normal(size=(3, 15))], axis=1)
    trees = [{"params": {"w": rng.normal(size=(3, 2)).astype(np.float32),
                         "half": half[i].astype(jnp.bfloat16)},
              "batch_stats": {"count": np.array(step, np.int32)}} for i, step in enumerate((1, 2, 3))]
    mean = workdirs.mean_variables([jax.tree.map(jnp.asarray, tree) for tree in trees])
    np.testing.assert_allclose(mean["params"]["w"], sum(t["params"]["w"] for t in trees) / 3, rtol=1e-6)
    assert mean["params"]["half"].dtype == jnp.bfloat16
    summed_wide = sum(t["params"]["half"].astype(np.float32) for t in trees) / np.float32(3)
    np.testing.assert_array_equal(np.asarray(mean["params"]["half"], np.float32),
                                  summed_wide.astype(jnp.bfloat16).astype(np.float32))
    assert float(mean["params"]["half"][0]) == 86.0
    assert mean["batch_stats"]["count"].dtype == jnp.int32 and int(mean["batch_stats"]["count"]) == 3
