"""T5 and BART against the reference implementation's outputs on tiny committed fixtures, and
export back to the reference's layout.

tests/fixtures/make_pretrained_fixtures.py wrote them with Hugging Face `transformers` (the bench
extra); these tests need neither torch nor transformers: they load each `save_pretrained`
directory with `flax_s2s.pretrained.load_pretrained` and compare with the stored outputs.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from jax.sharding import PartitionSpec as P
from pretrained_dirs import assert_export_round_trip, checkpoint_tensors
from safetensors.numpy import load_file, save_file

from flax_s2s import decoding, sharding
from flax_s2s.errors import FileFormatError
from flax_s2s.models.bart import BART_SPECIAL_TOKENS, bart_config
from flax_s2s.models.t5 import T5_SPECIAL_TOKENS
from flax_s2s.models.unroll import FULL_UNROLL_MAX
from flax_s2s.pretrained import (
    PretrainedError,
    export_pretrained,
    load_bart,
    load_pretrained,
    load_t5,
    tokenizer_vocab,
)
from flax_s2s.report import attention_weights

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
T5_VARIANTS = ("t5_v1_0", "t5_v1_1", "t5_v1_1_tied")
BART_VARIANTS = ("bart", "bart_scaled")
VARIANTS = T5_VARIANTS + BART_VARIANTS
MAX_LEN = 10  # what the fixture script generated


def _load(name: str):
    """(name, model, variables, reference outputs, encoded source) of one fixture."""
    directory = FIXTURES / name
    model, variables = load_pretrained(directory)
    reference = dict(np.load(directory / "reference.npz"))
    encoded = model.encode(variables, jnp.asarray(reference["src"]))
    return name, model, variables, reference, encoded


@pytest.fixture(scope="module", params=VARIANTS)
def loaded(request):
    """Every fixture: compared with the reference's outputs."""
    return _load(request.param)


@pytest.fixture(scope="module", params=("t5_v1_0", "t5_v1_1", "bart"))
def one_per_layout(request):
    """One fixture per layout (T5 v1.0's MLP and tied head, v1.1's, BART's; the others differ
    from these only where the logits test above checks them): for what the reference's outputs
    do not pin (the cached step, attention weights, dropout)."""
    return _load(request.param)


def test_teacher_forced_logits_match_reference(loaded):
    name, model, variables, reference, encoded = loaded
    logits = model.forward(variables, encoded, jnp.asarray(reference["tgt_inputs"]))
    assert logits.shape == reference["logits"].shape
    np.testing.assert_allclose(np.asarray(logits), reference["logits"], atol=1e-4, rtol=0, err_msg=name)


def test_step_equals_forward_at_every_position(one_per_layout):
    name, model, variables, reference, encoded = one_per_layout
    # padded past the full unroll (a rolled scan compiles in a fraction of the time); causal
    # attention leaves the first positions' logits as they are
    length = reference["tgt_inputs"].shape[1]
    tgt_inputs = jnp.asarray(np.pad(reference["tgt_inputs"], ((0, 0), (0, FULL_UNROLL_MAX + 1 - length)),
                                    constant_values=model.special_tokens.pad))
    parallel = model.forward(variables, encoded, tgt_inputs)[:, :length]
    stepped = model.scanned_forward(variables, encoded, tgt_inputs)[:, :length]  # `step` under lax.scan
    # float32 rounding differs between one query over the cache and all queries at once
    np.testing.assert_allclose(np.asarray(stepped), np.asarray(parallel), atol=5e-5, rtol=0, err_msg=name)
    np.testing.assert_allclose(np.asarray(stepped), reference["logits"], atol=1e-4, rtol=0, err_msg=name)


def test_greedy_matches_reference_generate(loaded):
    name, model, variables, reference, _ = loaded
    tokens, _, _ = decoding.greedy(model, variables, jnp.asarray(reference["src"]), max_len=MAX_LEN)
    np.testing.assert_array_equal(np.asarray(tokens), reference["greedy"], err_msg=name)


def test_beam4_best_matches_reference_generate(loaded):
    # alpha=0 on both sides: the one length penalty GNMT's and the reference's share
    name, model, variables, reference, _ = loaded
    tokens, _, _ = decoding.beam_search(
        model, variables, jnp.asarray(reference["src"]), beam_size=4, max_len=MAX_LEN, alpha=0.0
    )
    np.testing.assert_array_equal(np.asarray(tokens[:, 0]), reference["beam"], err_msg=name)


def test_cross_attention_weights_for_the_report(one_per_layout):
    _, model, variables, reference, _ = one_per_layout
    src = jnp.asarray(reference["src"])
    weights = attention_weights(model, variables, src, jnp.asarray(reference["tgt_inputs"]))
    assert len(weights) == model.module.config.num_decoder_layers
    real = np.asarray(src != model.special_tokens.pad)[:, None, :]
    for layer in weights:  # [batch, tgt, src]: all weight on real source positions
        assert layer.shape == (*reference["tgt_inputs"].shape, src.shape[1])
        np.testing.assert_allclose(np.where(real, np.asarray(layer), 0.0).sum(-1), 1.0, atol=1e-5)


def test_dropout_only_in_training(one_per_layout):
    _, model, variables, reference, _ = one_per_layout
    src, tgt_inputs = jnp.asarray(reference["src"]), jnp.asarray(reference["tgt_inputs"])

    def train_logits(seed):
        rng = jax.random.PRNGKey(seed)
        encoded = model.encode(variables, src, train=True, rng=rng)
        return np.asarray(model.forward(variables, encoded, tgt_inputs, train=True, rng=rng))

    assert model.module.config.dropout_rate == 0.1  # from config.json
    np.testing.assert_array_equal(train_logits(0), train_logits(0))
    assert np.abs(train_logits(0) - train_logits(1)).max() > 1e-3
    assert np.abs(train_logits(0) - reference["logits"]).max() > 1e-3


# --- BART's config and loading errors ---


def _config(variant: str) -> dict:
    return json.loads((FIXTURES / variant / "config.json").read_text())


def test_bart_config_from_config_json():
    config = bart_config(_config("bart"))
    assert config.special_tokens == BART_SPECIAL_TOKENS  # the decoder starts from </s> = eos
    assert (config.d_model, config.num_heads, config.mlp_dim, config.max_positions) == (16, 2, 32, 24)
    assert (config.norm_position, config.norm_epsilon, config.activation) == ("post", 1e-5, "gelu")
    assert not config.scale_embeddings and bart_config(_config("bart_scaled")).scale_embeddings
    with pytest.raises(ValueError, match="normalize_before"):
        bart_config({**_config("bart"), "normalize_before": True})  # mBART's pre-norm
    unequal = bart_config({**_config("bart"), "decoder_ffn_dim": 64, "decoder_attention_heads": 4})
    assert (unequal.mlp_dim, unequal.decoder_hidden, unequal.num_heads, unequal.decoder_heads) == (
        32, 64, 2, 4)


def test_model_type_picks_the_loader(tmp_path):
    with pytest.raises(PretrainedError, match=r"model_type 'bart', expected 't5'"):
        load_t5(FIXTURES / "bart")
    with pytest.raises(PretrainedError, match=r"model_type 't5', expected 'bart'"):
        load_bart(FIXTURES / "t5_v1_0")
    directory = tmp_path / "prophetnet"
    shutil.copytree(FIXTURES / "bart", directory)
    (directory / "config.json").write_text(json.dumps({**_config("bart"), "model_type": "prophetnet"}))
    with pytest.raises(PretrainedError, match=r"config\.json: model_type 'prophetnet' is not one of"):
        load_pretrained(directory)
    (directory / "config.json").write_text("{not json")
    with pytest.raises(PretrainedError, match=r"prophetnet/config\.json: not a JSON config"):
        load_pretrained(directory)


def test_bart_tensor_of_wrong_shape_names_itself(tmp_path):
    directory = tmp_path / "bart"
    shutil.copytree(FIXTURES / "bart", directory)
    tensors = load_file(directory / "model.safetensors")
    name = "model.decoder.layers.1.encoder_attn.k_proj.bias"
    tensors[name] = np.zeros((12,), np.float32)
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(PretrainedError, match=rf"tensor '{name}' has shape \[12\], but config\.json "
                                              r"asks for \[16\]"):
        load_bart(directory)


def test_bart_without_final_logits_bias_loads_it_as_zeros(tmp_path):
    # older BART checkpoints lack the buffer; transformers starts it at zeros, and so do we
    directory = tmp_path / "bart"
    shutil.copytree(FIXTURES / "bart", directory)
    tensors = load_file(directory / "model.safetensors")
    del tensors["final_logits_bias"]
    save_file(tensors, directory / "model.safetensors")
    _, variables = load_bart(directory)
    _, full = load_bart(FIXTURES / "bart")
    np.testing.assert_array_equal(np.asarray(variables["params"]["output_bias"]), 0.0)
    assert np.abs(np.asarray(full["params"]["output_bias"])).max() > 0.1  # the fixture's is not
    # exported (after fine-tuning, say) it is written: the bias is not lost
    changed = jax.tree.map(lambda x: x, variables)
    changed["params"]["output_bias"] = jnp.ones_like(changed["params"]["output_bias"])
    _, again = load_bart(export_pretrained(changed, directory, tmp_path / "exported"))
    np.testing.assert_array_equal(np.asarray(again["params"]["output_bias"]), 1.0)
    del tensors["model.encoder.layers.0.fc1.bias"]  # others stay required
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(PretrainedError, match=r"no tensor fills .*encoder_layers_0/mlp/hidden/bias"):
        load_bart(directory)


# --- export ---


@pytest.mark.parametrize("variant", VARIANTS)
def test_import_export_import_is_bit_exact(tmp_path, variant):
    assert_export_round_trip(FIXTURES / variant, tmp_path / "exported")


def test_export_writes_changed_weights_where_they_belong(tmp_path):
    # a fine-tuned model: every weight changed differently; the exported file must hold them
    # in the reference's layout, so that loading it gives the changed weights back
    reference = FIXTURES / "bart"
    _, variables = load_bart(reference)
    leaves, treedef = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
    changed = jax.tree.unflatten(
        treedef, [leaf + jax.random.normal(key, leaf.shape) for leaf, key in zip(leaves, keys, strict=True)]
    )
    out = export_pretrained(changed, reference, tmp_path / "fine_tuned")
    _, loaded_back = load_bart(out)
    jax.tree.map(np.testing.assert_array_equal, loaded_back, changed)
    # a torch Linear is [out, in]: fc1 of d_model 16 -> ffn 32 is written [32, 16]
    fc1 = checkpoint_tensors(out)["model.encoder.layers.0.fc1.weight"]
    kernel = changed["params"]["encoder_layers_0"]["mlp"]["hidden"]["kernel"]
    np.testing.assert_array_equal(fc1, np.asarray(kernel).T)


def test_bart_parameters_take_the_transformers_sharding_rules():
    _, variables = load_bart(FIXTURES / "bart")
    flat = {name: leaf.shape for name, leaf in flatten_dict(variables["params"], sep="/").items()}
    sizes = {"data": 1, "model": 2}
    expected = {
        "src_embed/embedding": P("model", None),  # shared by encoder, decoder and output
        "encoder_layers_0/self_attention/query/kernel": P(None, "model", None),
        "decoder_layers_1/cross_attention/out/kernel": P("model", None, None),
        "decoder_layers_0/mlp/hidden/kernel": P(None, "model"),
        "decoder_layers_0/mlp/hidden/bias": P("model"),
        "positions/embedding": P(None, None),  # BART's own parts: small, replicated
        "decoder_positions/embedding": P(None, None),
        "output_bias": P(None),
    }
    for name, spec in expected.items():
        assert sharding.param_spec(name, flat[name], sizes) == spec, name


def test_byt5_bytes_match_the_reference_tokenizer(tmp_path):
    # ByT5 has no vocabulary file: its tokenizer_config.json names ByT5Tokenizer
    cases = json.loads((FIXTURES / "byt5_tokens.json").read_text(encoding="utf-8"))
    directory = tmp_path / "byt5"
    shutil.copytree(FIXTURES / "t5_v1_1", directory)
    config = {**_config("t5_v1_1"), "vocab_size": 384}  # ByT5's: 3 specials, 256 bytes, extra ids
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "ByT5Tokenizer"}))
    vocab = tokenizer_vocab(directory)
    assert vocab.special_tokens == T5_SPECIAL_TOKENS and len(vocab) == 259
    for case in cases:
        if case["text"] is not None:
            assert vocab.encode(case["text"]) == case["ids"], case
        assert vocab.decode(case["ids"]) == case["decoded"], case
    saved = tmp_path / "vocab.bytes.json"
    vocab.save(saved)
    assert type(vocab).load(saved) == vocab
    saved.write_text('{"vocabulary": "pieces"}')
    with pytest.raises(FileFormatError, match=r"vocab\.bytes\.json: not a byte vocabulary"):
        type(vocab).load(saved)
