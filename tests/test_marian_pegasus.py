"""Marian and PEGASUS against the reference implementation's outputs on tiny committed fixtures
(tests/fixtures/make_marian_pegasus_fixtures.py wrote them with `transformers`): logits, greedy
and beam 4, export back to each layout, and their tokenizers' ids."""

from __future__ import annotations

import json
import math
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pretrained_dirs import assert_export_round_trip
from safetensors.numpy import load_file, save_file

from flax_s2s import decoding
from flax_s2s.data.piece_vocab import PieceVocab
from flax_s2s.errors import FileFormatError
from flax_s2s.models.marian import marian_config
from flax_s2s.models.pegasus import pegasus_config
from flax_s2s.models.transformer_layers import marian_sinusoids
from flax_s2s.pretrained import PretrainedError, load_pretrained, tokenizer_vocabs

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
VARIANTS = ("marian", "marian_separate", "pegasus")
MAX_LEN = 10  # what the fixture script generated


@pytest.fixture(scope="module", params=VARIANTS)
def loaded(request):
    """(name, model, variables, reference outputs) of each fixture."""
    directory = FIXTURES / request.param
    model, variables = load_pretrained(directory)
    return request.param, model, variables, dict(np.load(directory / "reference.npz"))


def test_teacher_forced_logits_match_reference(loaded):
    name, model, variables, reference = loaded
    encoded = model.encode(variables, jnp.asarray(reference["src"]))
    logits = model.forward(variables, encoded, jnp.asarray(reference["tgt_inputs"]))
    np.testing.assert_allclose(np.asarray(logits), reference["logits"], atol=1e-4, rtol=0, err_msg=name)


def test_greedy_and_beam4_match_reference_generate(loaded):
    name, model, variables, reference = loaded
    src = jnp.asarray(reference["src"])
    greedy, _, _ = decoding.greedy(model, variables, src, max_len=MAX_LEN)
    np.testing.assert_array_equal(np.asarray(greedy), reference["greedy"], err_msg=name)
    beams, _, _ = decoding.beam_search(model, variables, src, beam_size=4, max_len=MAX_LEN, alpha=0.0)
    np.testing.assert_array_equal(np.asarray(beams[:, 0]), reference["beam"], err_msg=name)


@pytest.mark.parametrize("variant", VARIANTS)
def test_import_export_import_is_bit_exact(tmp_path, variant):
    # PEGASUS's stored position tables included
    assert_export_round_trip(FIXTURES / variant, tmp_path / "exported")


def test_sinusoids_are_the_references_layout():
    # the reference's loop (MarianSinusoidalPositionalEmbedding), for an even and an odd width
    for rows, dim in ((7, 20), (5, 9)):
        expected = np.zeros((rows, dim))
        half = math.ceil(dim / 2)
        for pos in range(rows):
            angles = [pos / 10_000 ** (2 * (j // 2) / dim) for j in range(dim)]
            expected[pos, :half] = [math.sin(a) for a in angles[0::2]]
            expected[pos, half:] = [math.cos(a) for a in angles[1::2]]
        np.testing.assert_allclose(marian_sinusoids(rows, dim), expected, atol=1e-7, rtol=0)


def test_a_stored_position_table_of_another_layout_is_refused(tmp_path):
    directory = tmp_path / "pegasus"
    shutil.copytree(FIXTURES / "pegasus", directory)
    tensors = load_file(directory / "model.safetensors")
    name = "model.decoder.embed_positions.weight"
    table = tensors[name]
    half = table.shape[1] // 2
    interleaved = np.stack([table[:, :half], table[:, half:]], -1).reshape(table.shape)  # sin, cos, ...
    tensors[name] = np.ascontiguousarray(interleaved)
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(PretrainedError, match=rf"tensor '{name}' differs from the table"):
        load_pretrained(directory)


def _config(variant: str) -> dict:
    return json.loads((FIXTURES / variant / "config.json").read_text())


def test_configs_from_config_json():
    marian = marian_config(_config("marian"))
    assert (marian.activation, marian.norm_position, marian.sinusoidal_layout) == ("silu", "post", "marian")
    assert marian.share_embeddings and marian.tie_output and marian.scale_embeddings
    assert marian.special_tokens.pad == marian.special_tokens.bos == 87  # starts from pad
    separate = marian_config(_config("marian_separate"))
    assert not separate.share_embeddings and not separate.tie_output and separate.activation == "gelu"
    pegasus = pegasus_config(_config("pegasus"))
    assert (pegasus.norm_position, pegasus.activation, pegasus.special_tokens.unk) == ("pre", "relu", 105)
    # unequal stacks, read from config.json: layers, heads (of 5 and 10 features), MLP widths
    for config in (marian, separate, pegasus):
        assert (config.num_encoder_layers, config.num_heads, config.mlp_dim) == (3, 4, 36)
        assert (config.num_decoder_layers, config.decoder_num_heads, config.decoder_mlp_dim) == (2, 2, 28)
    with pytest.raises(ValueError, match="activation_function 'tanh'"):
        marian_config({**_config("marian"), "activation_function": "tanh"})
    with pytest.raises(ValueError, match="decoder_vocab_size=9 differs"):
        marian_config({**_config("marian"), "decoder_vocab_size": 9})


@pytest.mark.parametrize("variant", ("marian", "pegasus"))
def test_tokenizer_ids_match_the_reference_tokenizer(tmp_path, variant):
    # accents, digits, characters no piece covers (unk), a Marian language code
    source, target = tokenizer_vocabs(FIXTURES / variant)
    for case in json.loads((FIXTURES / variant / "tokens.json").read_text(encoding="utf-8")):
        assert source.encode(case["text"]) == case["ids"], case
        assert source.decode(case["ids"]) == case["decoded"], case
        if "target_ids" in case:  # Marian's target side: target.spm over the same vocab.json
            assert target.encode(case["text"]) == case["target_ids"], case
            assert target.decode(case["target_ids"]) == case["target_decoded"], case
    assert (source == target) == (variant == "pegasus")
    saved = tmp_path / "vocab.pieces.json"
    target.save(saved)
    assert PieceVocab.load(saved) == target
    saved.write_text('{"pieces": []}')
    with pytest.raises(FileFormatError, match=r"vocab\.pieces\.json: not a piece vocabulary"):
        PieceVocab.load(saved)


def test_marian_with_separate_target_vocabulary_is_refused(tmp_path):
    directory = tmp_path / "marian"
    shutil.copytree(FIXTURES / "marian", directory)
    shutil.copy(directory / "vocab.json", directory / "target_vocab.json")
    with pytest.raises(PretrainedError, match=r"separate source and target vocabularies"):
        tokenizer_vocabs(directory)


@pytest.mark.slow
def test_marian_fine_tunes_with_its_two_tokenizers_and_exports(tmp_path):
    # source.spm on the source side, target.spm on the target side, saved in the workdir; the
    # exported directory holds the run's weights in Marian's layout
    import importlib

    from conftest import ROLLED
    from pretrained_dirs import write_parallel_text

    from flax_s2s import training
    from flax_s2s.cli import export_pretrained as export_pretrained_cli
    from flax_s2s.workdirs import load_workdir

    config = importlib.import_module("configs.finetune_marian").get_config()
    config.pretrained = str(FIXTURES / "marian")
    config.data_path = str(write_parallel_text(tmp_path / "data"))
    config.update({**ROLLED, "bucket_boundaries": (), "batch_size": 8, "eval_batch_size": 8,
                   "num_train_steps": 2, "log_every": 1, "eval_every": 2, "checkpoint_every": 2,
                   "eval_beam_size": 0, "text_metrics": ("chrf",), "keep_best": 0})
    config.optimizer.warmup_steps = 1
    config.optimizer.learning_rate = 1e-2
    result = training.run(config, str(tmp_path / "run"))
    assert result["step"] == 2 and np.isfinite(result["final"]["test"]["loss"])
    trained = load_workdir(str(tmp_path / "run"))
    source, target = tokenizer_vocabs(FIXTURES / "marian")
    assert trained.src_vocab == source and trained.tgt_vocab == target and source != target
    out = tmp_path / "exported"
    export_pretrained_cli.main(["--workdir", str(tmp_path / "run"), "--out", str(out)])
    assert (out / "source.spm").is_file() and (out / "target.spm").is_file()
    _, exported = load_pretrained(out)
    jax.tree.map(np.testing.assert_array_equal, exported, trained.variables)
    _, start = load_pretrained(FIXTURES / "marian")
    moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(), exported, start)
    assert max(jax.tree.leaves(moved)) > 1e-4  # it trained
