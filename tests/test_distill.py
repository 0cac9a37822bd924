"""Distillation: the token-level loss (KL to the teachers' mean distribution) against NumPy, its
gradient, frozen teachers; sequence-level data equal to the teacher's own decoding, resumed by
shard without a line lost or doubled."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import LETTERS, ROLLED, ROOT, TINY_TRANSFORMER, tiny_config, train_tiny, tree_digest

from flax_s2s import infer, training
from flax_s2s.data.vocab import SymbolVocab
from flax_s2s.errors import ConfigError
from flax_s2s.forcing import TeacherForcing
from flax_s2s.models import build_model, decoder_inputs
from flax_s2s.training import distill as token_distill
from flax_s2s.training import step as train_step
from flax_s2s.training.config import validate_config

SHARD = 4


def _sums(model, config, teachers, weight, temperature):
    """The batch sums of `model` distilling from `teachers` (models) at `weight`, `temperature`."""
    config = config.copy_and_resolve_references()
    config.distill.weight, config.distill.temperature = weight, temperature
    term = token_distill.make_distill_term(tuple(teachers), temperature)
    forcing = TeacherForcing.from_config(config.teacher_forcing)
    return train_step.make_batch_sums(model, forcing, config, term)


@pytest.fixture(scope="module")
def runs():
    """A tiny trained LSTM, and a tiny Transformer on its vocabulary at initialisation:
    (config, model, tx, batch, initial, final) and (model, variables)."""
    config, model, tx, batch, initial, final, _ = train_tiny()
    transformer_config = tiny_config(**{"max_src_len": config.max_src_len,
                                        "max_tgt_len": config.max_tgt_len, **TINY_TRANSFORMER})
    size = len(SymbolVocab.build(LETTERS))  # train_tiny's vocabulary, both sides
    transformer = build_model(transformer_config, size, size)
    variables = jax.jit(transformer.init)(jax.random.PRNGKey(1), batch["src_tokens"],
                                          batch["tgt_tokens"])
    return (config, model, tx, batch, initial, final), (transformer, {"batch_stats": {}, **variables})


def _variables(state):
    return {"params": state.params, "batch_stats": state.batch_stats}


def test_the_kl_to_a_teacher_equal_to_the_student_has_no_gradient(runs):
    config, model, _, batch, initial, final = runs[0]
    sums = _sums(model, config, (model,), weight=1.0, temperature=2.0)

    @jax.jit
    def grad(teacher):
        def loss(params):
            return sums(params, final.batch_stats, batch, jax.random.PRNGKey(0), 0,
                        teachers=(teacher,))[0]
        return jax.grad(loss)(final.params)

    def gradient(teacher):
        return max(float(np.abs(g).max()) for g in jax.tree.leaves(grad(teacher)))

    assert gradient(_variables(final)) < 1e-5
    assert gradient(_variables(initial)) > 1e-2  # another teacher pulls the student


@pytest.mark.parametrize("overrides, message", [
    ({"distill.weight": 1.5}, "config.distill.weight=1.5: must be in [0, 1]"),
    ({"distill.temperature": 0.0}, "config.distill.temperature=0.0: must be > 0"),
    ({"distill.teachers": ("runs/a",), "teacher_forcing.p": 0.5},
     "config.distill.teachers with scheduled sampling"),
    ({"distill.teachers": ("runs/a",), "mrt.weight": 0.5},
     "config.distill.teachers with config.mrt.weight > 0"),
])
def test_the_distill_fields_are_checked_naming_them(overrides, message):
    with pytest.raises(ConfigError) as error:
        validate_config(tiny_config(**overrides))
    assert message in str(error.value)
    validate_config(tiny_config(**{"distill.teachers": ("runs/a",), "distill.weight": 1.0}))


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_the_loss_mixes_cross_entropy_and_the_kl_to_the_mean_of_the_teachers(runs):
    """Teachers of two architectures; the reference is NumPy over the models' logits."""
    (config, student, _, batch, lstm_initial, lstm_final), (t_model, t_variables) = runs
    weight, temperature = 0.3, 2.0
    sums = _sums(student, config, (t_model, student), weight, temperature)
    teachers = (t_variables, _variables(lstm_initial))
    loss, (counts, _) = sums(lstm_final.params, lstm_final.batch_stats, batch,
                             jax.random.PRNGKey(0), 0, teachers=teachers)

    src, tgt = np.asarray(batch["src_tokens"]), np.asarray(batch["tgt_tokens"])
    inputs = decoder_inputs(tgt, student.special_tokens.bos)

    def logits(model, variables):
        return np.asarray(model.forward(variables, model.encode(variables, src), inputs),
                          np.float64)

    student_logits = logits(student, _variables(lstm_final))
    mean = np.mean([np.exp(_log_softmax(logits(m, v) / temperature))
                    for m, v in zip((t_model, student), teachers, strict=True)], axis=0)
    q = _log_softmax(student_logits / temperature)
    mask = tgt != student.special_tokens.pad
    kl = (np.sum(mean * (np.log(mean) - q), -1) * mask).sum()
    log_p = _log_softmax(student_logits)
    cross_entropy = -(np.take_along_axis(log_p, tgt[..., None], -1)[..., 0] * mask).sum()
    np.testing.assert_allclose(float(counts["distill_kl"]), kl, rtol=1e-4)
    np.testing.assert_allclose(float(loss), (1 - weight) * cross_entropy
                               + weight * temperature**2 * kl, rtol=1e-4)


def test_teachers_stay_as_they_are_and_outside_the_optimizer(runs):
    (config, model, tx, batch, initial, _), (t_model, teacher) = runs
    config = config.copy_and_resolve_references()
    config.distill.weight = 0.5
    before = jax.tree.map(np.array, teacher)
    step = jax.jit(train_step.make_train_step(model, tx, config, teachers=(t_model,)),
                   donate_argnums=0)
    state = jax.tree.map(lambda x: x.copy(), initial)
    for _ in range(3):
        state, step_metrics = step(state, batch, (teacher,))
    assert np.isfinite(float(step_metrics["distill_kl"])) and float(step_metrics["distill_kl"]) > 0
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, teacher))
    assert jax.tree.structure(state.opt_state) == jax.tree.structure(initial.opt_state)
    assert not np.allclose(np.asarray(jax.tree.leaves(state.params)[0]),
                           np.asarray(jax.tree.leaves(initial.params)[0]))


def _reversals(count, seed):
    rng = np.random.default_rng(seed)
    texts = ["".join(rng.choice(list(LETTERS), rng.integers(2, 7))) for _ in range(count)]
    return [(text, text[::-1]) for text in dict.fromkeys(texts)]


def _write_tsv(directory, split, pairs):
    directory.mkdir(exist_ok=True)
    (directory / f"{split}.tsv").write_text(
        "source\ttarget\n" + "".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A trained parallel-text workdir (reversals of letters) and a file of other sources."""
    root = tmp_path_factory.mktemp("distill")
    data = root / "data"
    _write_tsv(data, "train", _reversals(300, 0))
    _write_tsv(data, "validation", _reversals(20, 1))
    config = tiny_config(**{"task": "parallel_text", "data_path": str(data), **ROLLED,
                            "num_train_steps": 30, "eval_every": 1000,
                            "final_eval_split": "validation", "optimizer.learning_rate": 1e-2,
                            "optimizer.warmup_steps": 5})
    workdir = str(root / "teacher")
    training.run(config, workdir)
    other = root / "other"
    _write_tsv(other, "train", _reversals(14, 2))  # 14 sources: shards of 4, 4, 4, 2
    return config, workdir, other


def test_a_teacher_of_other_vocabularies_is_refused_in_one_line_naming_both(teacher, tmp_path):
    config, workdir, _ = teacher
    digits = tmp_path / "digits"
    _write_tsv(digits, "train", [(str(n), str(n)[::-1]) for n in range(10, 60)])
    _write_tsv(digits, "validation", [("12", "21")])
    student = config.copy_and_resolve_references()
    student.data_path, student.distill.teachers = str(digits), (workdir,)
    with pytest.raises(ConfigError) as error:
        training.run(student, str(tmp_path / "student"))
    message = str(error.value)
    assert "\n" not in message and workdir in message and str(tmp_path / "student") in message
    assert "vocabulary" in message


def test_a_student_trains_with_its_teacher_and_logs_the_kl(teacher, tmp_path):
    config, workdir, _ = teacher
    before = tree_digest(workdir)
    student = config.copy_and_resolve_references()
    student.num_train_steps, student.log_every = 2, 1
    student.distill.teachers = (workdir,)
    student_dir = tmp_path / "student"
    training.run(student, str(student_dir))
    records = [json.loads(line) for line in open(student_dir / "metrics.jsonl")]
    kls = [r["distill_kl"] for r in records if "distill_kl" in r]
    assert len(kls) == 2 and all(np.isfinite(kls)) and min(kls) > 0
    assert tree_digest(workdir) == before


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_distilled_targets_are_the_teachers_beam_outputs_and_a_stopped_run_resumes(teacher,
                                                                                   tmp_path):
    from flax_s2s import distill

    _, workdir, other = teacher
    out = tmp_path / "distilled"
    pairs = _reversals(14, 2)
    kwargs = {"beam": 3, "data": str(other), "keep_references": True, "shard_size": SHARD,
              "batch_size": 3, "alpha": 0.6, "log": lambda message: None}
    assert distill.distill([workdir], str(out), max_shards=1, **kwargs) is None
    assert sorted(p.name for p in out.iterdir()) == ["distill.json", "shard-00000.jsonl"]
    first_shard = (out / "shard-00000.jsonl").read_text()
    (out / ".shard-00001.jsonl.123.partial").write_text("cut short\n")  # a write killed midway
    assert distill.distill([workdir], str(out), max_shards=2, **kwargs) is None
    assert (out / "shard-00000.jsonl").read_text() == first_shard  # not written again
    final = distill.distill([workdir], str(out), **kwargs)
    assert sorted(p.name for p in out.iterdir()) == ["distill.json", "train.jsonl"]

    sources = tmp_path / "sources.txt"
    sources.write_text("".join(s + "\n" for s, _ in pairs))
    expected = infer.decode_file(workdir, str(sources), beam_size=3, alpha=0.6, batch_size=5)
    rows = _rows(final)
    assert [r["source"] for r in rows] == [s for s, _ in pairs]  # each once, in input order
    assert [r["target"] for r in rows] == [
        list(dict.fromkeys([e, t] if e else [t])) for e, (_, t) in zip(expected, pairs, strict=True)]
    with pytest.raises(distill.outputs.OutputError, match="is complete; pass --overwrite"):
        distill.distill([workdir], str(out), **kwargs)


@pytest.mark.slow
def test_the_distill_command_stops_after_max_shards_and_finishes_when_run_again(teacher,
                                                                                 tmp_path):
    _, workdir, other = teacher
    out = tmp_path / "distilled"
    command = [sys.executable, "-m", "flax_s2s.distill", f"--workdir={workdir}",
               f"--workdir={workdir}", f"--data={other}", f"--out={out}", "--beam=2",
               f"--shard_size={SHARD}"]
    env = {**os.environ, "PYTHONPATH": ROOT}
    first = subprocess.run([*command, "--max_shards=3"], cwd=ROOT, capture_output=True,
                           text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "shard 3/4" in first.stderr and "--max_shards=3" in first.stderr
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "shard 1/4: written already" in second.stderr and "shard 4/4: 2 sources" in second.stderr
    rows = _rows(out / "train.jsonl")
    assert [r["source"] for r in rows] == [s for s, _ in _reversals(14, 2)]
