"""mBART and a BART with unequal stacks against the reference implementation's outputs on tiny
committed fixtures (tests/fixtures/make_mbart_fixtures.py wrote them with transformers), export
back to the reference's layout, mBART's tokenizer against the reference tokenizer's ids, and
the forced first token (the target language code) in every search."""

from __future__ import annotations

import importlib
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROLLED, tiny_config
from pretrained_dirs import assert_export_round_trip, write_parallel_text

from flax_s2s import decoding, infer, training
from flax_s2s.data.fairseq_vocab import FairseqVocab
from flax_s2s.data.pretrained_tokenizer import tokenizer_vocabs
from flax_s2s.errors import ConfigError
from flax_s2s.pretrained import PretrainedError, configure, load_pretrained
from flax_s2s.pretrained.load import pretrained_module
from flax_s2s.training.config import validate_config
from flax_s2s.training.evaluation import make_evaluator
from flax_s2s.workdirs import forced_controls, load_workdir

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
VARIANTS = ("bart_unequal", "mbart")
MAX_LEN = 10  # what the fixture script generated
TGT_LANG = 80  # ro_RO in the fixture's vocabulary: 60 pieces + 1, then the codes (ro_RO the 20th)


def _forced(name: str) -> int:
    return TGT_LANG if name == "mbart" else -1


@pytest.fixture(scope="module", params=VARIANTS)
def loaded(request):
    directory = FIXTURES / request.param
    model, variables = load_pretrained(directory)
    reference = dict(np.load(directory / "reference.npz"))
    return request.param, model, variables, reference


def test_stacks_have_their_own_sizes():
    config = pretrained_module(FIXTURES / "bart_unequal").config
    assert (config.num_heads, config.mlp_dim, config.num_encoder_layers) == (3, 40, 3)
    assert (config.decoder_heads, config.decoder_hidden, config.num_decoder_layers) == (2, 36, 2)
    mbart = pretrained_module(FIXTURES / "mbart").config
    assert (mbart.norm_position, mbart.scale_embeddings, mbart.embedding_norm) == ("pre", True, True)
    assert (mbart.num_heads, mbart.decoder_heads, mbart.d_model) == (3, 5, 15)


def test_teacher_forced_logits_match_reference(loaded):
    name, model, variables, reference = loaded
    encoded = model.encode(variables, jnp.asarray(reference["src"]))
    logits = model.forward(variables, encoded, jnp.asarray(reference["tgt_inputs"]))
    assert logits.shape == reference["logits"].shape
    np.testing.assert_allclose(np.asarray(logits), reference["logits"], atol=1e-4, rtol=0, err_msg=name)


def test_greedy_matches_reference_generate(loaded):
    name, model, variables, reference = loaded
    tokens, _, _ = decoding.greedy(model, variables, jnp.asarray(reference["src"]), max_len=MAX_LEN,
                                   forced_bos=_forced(name))
    np.testing.assert_array_equal(np.asarray(tokens), reference["greedy"], err_msg=name)


def test_beam4_best_matches_reference_generate(loaded):
    name, model, variables, reference = loaded
    tokens, _, _ = decoding.beam_search(model, variables, jnp.asarray(reference["src"]), beam_size=4,
                                        max_len=MAX_LEN, alpha=0.0, forced_bos=_forced(name))
    np.testing.assert_array_equal(np.asarray(tokens[:, 0]), reference["beam"], err_msg=name)


def test_forced_first_token_in_every_search():
    model, variables = load_pretrained(FIXTURES / "mbart")
    reference = dict(np.load(FIXTURES / "mbart" / "reference.npz"))
    src = jnp.asarray(reference["src"])
    unforced, _, _ = decoding.greedy(model, variables, src, max_len=MAX_LEN)
    np.testing.assert_array_equal(np.asarray(unforced), reference["unforced_greedy"])
    assert (reference["unforced_greedy"][:, 0] != TGT_LANG).all()  # so forcing shows
    drawn, _, _ = decoding.sample(model, variables, src, MAX_LEN, jax.random.PRNGKey(0),
                                  forced_bos=TGT_LANG)
    assert (np.asarray(drawn)[:, 0] == TGT_LANG).all()
    # a forced prefix follows the forced first token
    prefix = np.full((src.shape[0], 1), 19, np.int32)
    tokens, _, _ = decoding.greedy(model, variables, src, MAX_LEN, prefix=prefix, forced_bos=TGT_LANG)
    assert np.asarray(tokens)[:, :2].tolist() == [[TGT_LANG, 19]] * src.shape[0]
    with pytest.raises(ValueError, match=r"forced_bos=-2: must be an integer >= -1"):
        decoding.GenerationControls(forced_bos=-2)


@pytest.mark.parametrize("variant", VARIANTS)
def test_import_export_import_is_bit_exact(tmp_path, variant):
    original = assert_export_round_trip(FIXTURES / variant, tmp_path / "exported")
    assert "model.decoder.layer_norm.weight" in original or variant != "mbart"


def test_tokenizer_ids_match_the_reference_tokenizer(tmp_path):
    cases = json.loads((FIXTURES / "mbart" / "tokenizer_cases.json").read_text(encoding="utf-8"))
    src, tgt = tokenizer_vocabs(FIXTURES / "mbart", src_lang="en_XX", forced_bos="ro_RO")
    assert len(src) == 114 and src.special_tokens == tgt.special_tokens
    for case in cases:
        assert src.encode(case["text"]) == case["src"], case
        assert tgt.encode(case["text"]) == case["tgt"], case
        assert tgt.decode(case["tgt"][1:]) == case["decoded"].strip(), case
    assert src.unk_count > 0  # the characters outside the pieces were counted
    tgt.save(tmp_path / "tgt_vocab.fairseq.json")
    assert FairseqVocab.load(tmp_path / "tgt_vocab.fairseq.json") == tgt
    with pytest.raises(PretrainedError, match=r"forced_bos: token 'xx_XX' is not in the vocabulary"):
        tokenizer_vocabs(FIXTURES / "mbart", forced_bos="xx_XX")


def test_cc25_tokenizer_puts_the_source_code_last(tmp_path):
    # MBartTokenizer (mbart-large-cc25): 25 codes (the same first 25), so <mask> 86 not 113;
    # sources X </s> [en_XX]
    directory = tmp_path / "cc25"
    shutil.copytree(FIXTURES / "mbart", directory)
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MBartTokenizer"}))
    src, _ = tokenizer_vocabs(directory, src_lang="en_XX")
    assert len(src) == 60 + 1 + 25 + 1
    for case in json.loads((FIXTURES / "mbart" / "tokenizer_cases.json").read_text(encoding="utf-8")):
        expected = [86 if i == 113 else i for i in case["src"][1:] + case["src"][:1]]
        assert src.encode(case["text"]) == expected, case


def test_forced_bos_defaults_from_config_json_and_needs_a_pretrained_tokenizer():
    config = tiny_config(pretrained=str(FIXTURES / "mbart"))
    configure(config)
    assert (config.model.type, config.forced_bos, config.vocab.type) == ("mbart", "80", "pretrained")
    with pytest.raises(ConfigError, match=r"config\.forced_bos='ro_RO': frames the texts"):
        validate_config(tiny_config(forced_bos="ro_RO"))


def test_config_errors_name_the_file_once(tmp_path):
    directory = tmp_path / "prenorm"
    shutil.copytree(FIXTURES / "bart_unequal", directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "normalize_before": True}))
    with pytest.raises(PretrainedError) as error:
        load_pretrained(directory)
    assert str(error.value).count("config.json") == 1, str(error.value)
    assert "normalize_before" in str(error.value)


@pytest.mark.slow
def test_mbart_fine_tunes_on_language_codes_and_decodes_with_the_forced_one(tmp_path):
    config = importlib.import_module("configs.finetune_mbart").get_config()
    config.pretrained = str(FIXTURES / "mbart")
    config.data_path = str(write_parallel_text(tmp_path / "data"))
    config.update({**ROLLED, "bucket_boundaries": (), "batch_size": 8, "eval_batch_size": 8,
                   "num_train_steps": 2, "log_every": 1, "eval_every": 2, "checkpoint_every": 2,
                   "eval_beam_size": 0, "text_metrics": ("chrf",), "keep_best": 0})
    config.optimizer.warmup_steps = 1
    workdir = str(tmp_path / "run")
    assert training.run(config, workdir)["step"] == 2
    trained = load_workdir(workdir)
    en, de = trained.src_vocab.token_id("en_XX"), trained.tgt_vocab.token_id("de_DE")
    # sources [en_XX] X </s>, targets [ro_RO] X </s>, as mBART-50's tokenizer writes them
    assert trained.src_vocab.encode("ab")[0] == en and trained.src_vocab.encode("ab")[-1] == 2
    assert trained.tgt_vocab.encode("ab")[0] == TGT_LANG
    lines = ["abc de", "fgh"]
    for flag, first in (("", TGT_LANG), ("de_DE", de)):
        controls = forced_controls(trained, None, flag)
        for beam in (0, 2):
            outputs = infer.decode_hypotheses(trained, lines, beam_size=beam, controls=controls)
            assert [best[0].tokens[0] for best in outputs] == [first] * len(lines)
    assert forced_controls(trained, None, "none") is None
    # the evaluations during training force it as decode does
    src = np.full((8, trained.config.max_src_len), 1, np.int32)
    src[:, :3] = trained.src_vocab.encode("ab")[:3]
    evaluator = make_evaluator(trained.model, trained.config, forced_bos=de)
    assert (np.asarray(evaluator.decode(trained.variables, src))[:, 0] == de).all()
    with pytest.raises(PretrainedError, match=r"forced_bos: token 'xx_XX' is not in the vocab"):
        forced_controls(trained, None, "xx_XX")
