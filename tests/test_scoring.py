"""Teacher-forced scoring: equal to what the decoders report for their own outputs, the
evaluator's loss read from it, and the score command (line order, formats, bad lines)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import ROLLED, ROOT, tiny_config

from configs import default
from flax_s2s import decoding, evaluate, score, scoring, training
from flax_s2s.cli import evaluate as cli_evaluate
from flax_s2s.data.vocab import BOS, EOS, PAD, SymbolVocab
from flax_s2s.infer import InputError
from flax_s2s.models import build_model, decoder_inputs
from flax_s2s.workdirs import TrainedModel, load_workdir

SRC_VOCAB, TGT_VOCAB, MAX_SRC, MAX_TGT, BATCH = 9, 7, 16, 13, 3
# Sources as a batch of the score command holds them (BATCH rows, MAX_SRC wide), so the scorer
# compiles for few shapes.
SRC = np.zeros((BATCH, MAX_SRC), np.int32)
SRC[0, :3], SRC[1, :2], SRC[2, :14] = [4, 5, 6], [7, 8], [4, 4, 4, 4, 5, 6, 7, 8] + [5] * 6


@functools.cache
def _tiny_model():
    """A tiny Transformer: its decoders read a KV cache step by step, its scorer one parallel
    pass, so the two share no code past the layers."""
    config = default.get_config()
    config.model.type = "transformer"
    config.model.update(d_model=16, num_heads=2, mlp_dim=32, num_decoder_layers=1)
    model = build_model(config, SRC_VOCAB, TGT_VOCAB)
    return model, jax.jit(model.init)(jax.random.PRNGKey(3), SRC, np.zeros((BATCH, MAX_TGT), np.int32))


def test_a_decoded_output_scores_what_its_decoder_reported():
    """Greedy's and sampling's own scores (a while loop over cached steps) equal the scorer's
    sums (one teacher-forced pass) on their outputs, ended by EOS or cut at max_len."""
    model, variables = _tiny_model()
    greedy = decoding.greedy(model, variables, SRC, MAX_TGT)
    sampled = decoding.sample(model, variables, SRC, MAX_TGT, jax.random.PRNGKey(0))
    for tokens, lengths, scores in (greedy, sampled):
        log_probs = np.asarray(scoring.target_log_probs(model, variables, SRC, tokens))
        np.testing.assert_allclose(log_probs.sum(-1), scores, rtol=1e-5, atol=1e-5)
        assert (log_probs[np.asarray(tokens) == PAD] == 0).all()
        assert (np.asarray(tokens) != PAD).sum(-1).tolist() == np.asarray(lengths).tolist()
    assert not (np.asarray(greedy[0]) == np.asarray(sampled[0])).all(), "sampling should differ"
    lengths = np.concatenate([greedy[1], sampled[1]])
    assert (lengths < MAX_TGT).any() and (lengths > 1).any(), "ended and longer outputs both"


@functools.cache
def _forward(model):
    return jax.jit(lambda v, s, t: model.forward(v, model.encode(v, s), decoder_inputs(t)))


def _numpy_log_probs(model, variables, src, tgt):
    """log-softmax in float64 over the tokens a decoder emits (PAD and BOS left out)."""
    logits = np.asarray(_forward(model)(variables, src, tgt), np.float64)
    logits[..., [PAD, BOS]] = -np.inf
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_the_evaluators_loss_and_accuracy_are_the_scorers():
    model, variables = _tiny_model()
    rng = np.random.default_rng(0)
    tgt = rng.integers(EOS + 1, TGT_VOCAB, (BATCH, MAX_TGT)).astype(np.int32)
    for row, length in enumerate([13, 3, 2]):  # EOS last, then PAD
        tgt[row, length - 1], tgt[row, length:] = EOS, PAD
    weights = np.array([1, 1, 0], np.float32)  # the last row pads a batch
    batch = {"src_tokens": SRC, "tgt_tokens": tgt, "weights": weights, "predicted_tokens": tgt}
    sums = jax.device_get(jax.jit(training.make_eval_step(model))(variables, batch))
    log_probs = _numpy_log_probs(model, variables, SRC, tgt)
    counted = (tgt != PAD) & (weights[:, None] > 0)
    target = np.take_along_axis(log_probs, tgt[..., None], -1)[..., 0]
    np.testing.assert_allclose(sums["loss_sum"], -target[counted].sum(), rtol=1e-5)
    assert sums["tokens"] == counted.sum() == 16
    assert sums["tf_correct"] == (log_probs.argmax(-1) == tgt)[counted].sum()
    assert 0 < sums["tf_correct"] < 16


# --- the score command's library ---

SOURCES = ["abc", "d", "", "eeee", "ab", "edcbaedcba", "abcdeabcdeabcdeab", "c", "dd", "bca"]
TARGETS = ["xy", "z", "x", "yyyyyyyyyyyyy", "", "xzyxzyxzy", "x", "yx", "zzzz", "y"]
# Not scored: 2 (empty source), 3 (14 target tokens with EOS), 4 (empty target), 6 (17 source
# symbols). Sorted batches of 3: 16 wide by 13, then 8 by 8.


def _trained() -> TrainedModel:
    model, variables = _tiny_model()
    config = default.get_config()
    config.max_src_len, config.max_tgt_len = MAX_SRC, MAX_TGT
    return TrainedModel(config, model, variables, SymbolVocab(list("abcde")),
                        SymbolVocab(list("xyz")), step=0, averaged_steps=(0,))


def _alone(trained, source, target):
    """The pair as the only row of a full-width batch: (target ids, log p of each, from the
    jitted scorer, and from NumPy)."""
    src = np.zeros((BATCH, trained.config.max_src_len), np.int32)
    tgt = np.zeros((BATCH, trained.config.max_tgt_len), np.int32)
    src_ids = trained.src_vocab.encode(source, add_eos=False)
    tgt_ids = trained.tgt_vocab.encode(target, add_eos=True)
    src[0, : len(src_ids)], tgt[0, : len(tgt_ids)] = src_ids, tgt_ids
    scored = np.asarray(scoring.target_log_probs(trained.model, trained.variables, src, tgt))[0]
    numpy = np.take_along_axis(_numpy_log_probs(trained.model, trained.variables, src, tgt),
                               tgt[..., None], -1)[0, :, 0]
    return tgt_ids, scored[: len(tgt_ids)], numpy[: len(tgt_ids)]


def test_scores_come_back_in_input_order_and_bad_lines_keep_their_place():
    trained = _trained()
    messages = []
    by_length = score.score_pairs(trained, SOURCES, TARGETS, BATCH, warn=messages.append)
    in_order = score.score_pairs(trained, SOURCES, TARGETS, BATCH, sort=False,
                                 warn=lambda message: None)
    assert messages == [
        "--input line 3: empty input; printing an empty line",
        "--input line 7: 17 source symbols exceed the model's max_src_len=16; printing an empty line",
        "--targets line 4: 14 target tokens with EOS exceed the model's max_tgt_len=13; printing "
        "an empty line",
        "--targets line 5: empty target; printing an empty line",
    ]
    scored = [i for i, s in enumerate(by_length) if s is not None]
    assert scored == [0, 1, 5, 7, 8, 9]
    for index in scored:
        tokens, log_probs, numpy = _alone(trained, SOURCES[index], TARGETS[index])
        np.testing.assert_allclose(log_probs, numpy, rtol=1e-5, atol=1e-5)
        for got in (by_length[index], in_order[index]):
            assert got.tokens == tokens
            np.testing.assert_allclose(got.token_log_probs, log_probs, rtol=1e-5, atol=1e-6)
            assert got.log_prob == pytest.approx(log_probs.sum(), rel=1e-5)
    assert [s is None for s in in_order] == [s is None for s in by_length]

    text = score.format_scores(by_length)
    assert text[2] == "" and text[0] == (f"{by_length[0].log_prob:.4f}\t3\t"
                                         f"{by_length[0].log_prob / 3:.4f}")
    rows = [json.loads(line) for line in score.format_scores(by_length, "jsonl")]
    assert [r["index"] for r in rows] == list(range(len(SOURCES)))
    assert rows[6] == {"index": 6, "log_prob": None, "length": None, "mean_log_prob": None,
                       "tokens": [], "token_log_probs": []}
    for r, s in zip(rows, by_length, strict=True):
        if s is not None:
            assert (r["tokens"], r["length"], r["token_log_probs"]) == (s.tokens, len(s.tokens),
                                                                      s.token_log_probs)
            assert r["log_prob"] == s.log_prob and r["mean_log_prob"] == s.log_prob / r["length"]

    with pytest.raises(InputError, match="--input has 10 lines but --targets has 9"):
        score.score_pairs(trained, SOURCES, TARGETS[:-1])
    with pytest.raises(InputError, match=r"^--targets line 2: empty target \(--strict\)$"):
        score.score_pairs(trained, ["a", "b"], ["x", " "], strict=True)
    with pytest.raises(InputError, match=r"^--input line 3: empty input \(--strict\)$"):
        score.score_pairs(trained, SOURCES, TARGETS, strict=True)
    with pytest.raises(InputError, match="none of the 2 line pair"):
        score.score_pairs(trained, ["", "a"], ["x", ""], warn=lambda message: None)


@pytest.mark.slow
def test_score_and_evaluate_commands_on_a_trained_workdir(tmp_path, addition_data_dir):
    workdir = str(tmp_path / "run")
    config = tiny_config(**{
        # as the decode command's test trains, so that the compiled steps may be shared
        "data_dir": addition_data_dir, "num_train_steps": 60, "eval_every": 1000, **ROLLED,
        "eval_batch_size": 500, "final_eval_split": "validation",
        "optimizer.learning_rate": 1e-2, "optimizer.warmup_steps": 10,
        "text_metrics": ("rouge", "chrf"),
    })
    result = training.run(config, workdir)
    final = result["final"]["validation"]
    assert {"rouge1", "rouge2", "rougeL", "rougeLsum"} <= set(final) and final["chrf"] > 0

    sources = ["12+34", "999+1", "", "5+5", "1+2+3+4+5+6+7+8"]
    targets = ["46", "1000", "7", "1 0", "36"]
    (tmp_path / "src.txt").write_text("\n".join(sources) + "\n")
    (tmp_path / "tgt.txt").write_text("\n".join(targets) + "\n")
    command = [sys.executable, "-m", "flax_s2s.score", f"--workdir={workdir}",
               f"--input={tmp_path / 'src.txt'}", f"--targets={tmp_path / 'tgt.txt'}",
               "--format=jsonl", "--batch_size=2"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    trained = load_workdir(workdir)
    for index in (0, 1, 3):  # against NumPy's log-softmax of the pair alone
        tokens, _, log_probs = _alone(trained, sources[index], targets[index])
        assert rows[index]["tokens"] == tokens
        assert rows[index]["log_prob"] == pytest.approx(log_probs.sum(), rel=1e-4)
    assert rows[2]["log_prob"] is None and rows[4]["log_prob"] is None
    assert "--input line 3: empty input" in run.stderr
    assert "--input line 5: 15 source symbols exceed the model's max_src_len=13" in run.stderr
    assert "--targets line 4: 1 symbol(s) outside the target vocabulary scored as <unk>" in run.stderr

    with pytest.raises(InputError, match="cannot read --targets '/nonexistent': No such file"):
        score.score_file(workdir, str(tmp_path / "src.txt"), "/nonexistent")

    # The evaluate command's library on the run's own split: the run's text metrics by default.
    scores = evaluate.evaluate_lexicon(workdir, None, split="validation")
    assert scores["metric_names"] == ("rouge1", "rouge2", "rougeL", "rougeLsum", "chrf",
                                      "exact_match")
    assert [cli_evaluate.format_metric(name, scores[name]) for name in scores["metric_names"]] == [
        f"ROUGE-1 {final['rouge1']:.2f}", f"ROUGE-2 {final['rouge2']:.2f}",
        f"ROUGE-L {final['rougeL']:.2f}", f"ROUGE-Lsum {final['rougeLsum']:.2f}",
        f"chrF {final['chrf']:.2f}", f"exact match {100 * final['exact_match']:.2f}%"]
    bleu = evaluate.evaluate_lexicon(workdir, None, split="validation", metric_names=["bleu"])
    assert bleu["metric_names"] == ("bleu",) and 0 <= bleu["bleu"] <= 100
    with pytest.raises(ValueError, match=r"--metrics=rouge,meteor: \['meteor'\] not in"):
        evaluate.evaluate_lexicon(workdir, None, split="validation", metric_names=["rouge", "meteor"])
