"""T5: its config, relative-position buckets against the reference's, loading errors that name
the tensor, sharding rules, and a T5 built from a flax_s2s config. The comparisons with the
reference implementation's outputs (T5 and BART) are in test_pretrained.py."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROLLED, TINY_TRANSFORMER, tiny_config, train_tiny
from flax.traverse_util import flatten_dict
from jax.sharding import PartitionSpec as P
from safetensors.flax import save_file as save_flax_file
from safetensors.numpy import load_file, save_file

from flax_s2s import decoding, sharding
from flax_s2s.models import build_model
from flax_s2s.models.t5 import T5Config, relative_position_bucket
from flax_s2s.pretrained import PretrainedError, load_t5
from flax_s2s.training.config import ConfigError, validate_config

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def test_config_reads_both_head_layouts():
    base = json.loads((FIXTURES / "t5_v1_0" / "config.json").read_text())
    v1_0 = T5Config.from_hf_config(base)
    assert (v1_0.tie_output, v1_0.scale_output, v1_0.feed_forward) == (True, True, "relu")
    assert (v1_0.special_tokens.pad, v1_0.special_tokens.bos, v1_0.special_tokens.eos) == (0, 0, 1)
    # published v1.1 checkpoints: tie_word_embeddings false, no scale_decoder_outputs
    v1_1 = T5Config.from_hf_config(json.loads((FIXTURES / "t5_v1_1" / "config.json").read_text()))
    assert (v1_1.tie_output, v1_1.scale_output, v1_1.feed_forward) == (False, False, "gated-gelu")
    # newer transformers: always tied, scale_decoder_outputs says whether to rescale
    newer = T5Config.from_hf_config(json.loads((FIXTURES / "t5_v1_1_tied" / "config.json").read_text()))
    assert (newer.tie_output, newer.scale_output) == (True, False)
    with pytest.raises(ValueError, match="feed_forward"):
        T5Config.from_hf_config({**base, "feed_forward_proj": "gated-silu"})


def test_relative_position_buckets_match_reference():
    reference = np.load(FIXTURES / "t5_buckets.npz")
    for key in reference.files:
        if key == "relative":
            continue
        direction, num_buckets, max_distance = key.split("_")
        got = relative_position_bucket(
            reference["relative"], direction == "bidirectional", int(num_buckets), int(max_distance)
        )
        np.testing.assert_array_equal(got, reference[key], err_msg=key)


def _edited_copy(tmp_path: pathlib.Path, variant: str, edit) -> pathlib.Path:
    """A copy of a fixture directory whose tensors `edit(tensors)` has changed in place."""
    directory = tmp_path / variant
    shutil.copytree(FIXTURES / variant, directory)
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors")
    return directory


def test_wrong_shape_names_the_tensor_and_file(tmp_path):
    name = "encoder.block.1.layer.0.SelfAttention.q.weight"

    def edit(tensors):
        tensors[name] = np.zeros((9, 16), np.float32)

    directory = _edited_copy(tmp_path, "t5_v1_0", edit)
    with pytest.raises(PretrainedError, match=rf"model\.safetensors: tensor '{name}' has shape \[9, 16\]"):
        load_t5(directory)


def test_unmapped_tensor_names_itself(tmp_path):
    name = "encoder.block.0.layer.0.SelfAttention.extra.weight"

    def edit(tensors):
        tensors[name] = np.zeros((8, 16), np.float32)

    with pytest.raises(PretrainedError, match=rf"tensor '{name}' \[8, 16\] maps to no T5 variable"):
        load_t5(_edited_copy(tmp_path, "t5_v1_1", edit))


def test_missing_tensor_names_the_variable(tmp_path):
    def edit(tensors):
        del tensors["decoder.block.1.layer.2.DenseReluDense.wi_1.weight"]

    with pytest.raises(PretrainedError, match=r"no tensor fills .*decoder_layers_1/mlp/wi_1/kernel"):
        load_t5(_edited_copy(tmp_path, "t5_v1_1", edit))


def test_embedding_aliases_must_agree(tmp_path):
    # the v1.1 fixture holds shared, encoder.embed_tokens and decoder.embed_tokens (one matrix)
    def edit(tensors):
        tensors["decoder.embed_tokens.weight"] = tensors["decoder.embed_tokens.weight"] + 1.0

    with pytest.raises(PretrainedError, match=r"'decoder\.embed_tokens\.weight' differs from"):
        load_t5(_edited_copy(tmp_path, "t5_v1_1", edit))


def test_bfloat16_checkpoint_loads_as_float32(tmp_path):
    directory = tmp_path / "t5_v1_0"
    shutil.copytree(FIXTURES / "t5_v1_0", directory)
    tensors = load_file(directory / "model.safetensors")
    save_flax_file({name: jnp.asarray(value, jnp.bfloat16) for name, value in tensors.items()},
                   directory / "model.safetensors")
    _, variables = load_t5(directory)
    _, exact = load_t5(FIXTURES / "t5_v1_0")
    got = variables["params"]["encoder_layers_1"]["mlp"]["wi"]["kernel"]
    want = exact["params"]["encoder_layers_1"]["mlp"]["wi"]["kernel"]
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want.astype(jnp.bfloat16), np.float32))


def test_rule_table_shards_t5_parameters():
    _, variables = load_t5(FIXTURES / "t5_v1_1")
    flat = {name: leaf.shape for name, leaf in flatten_dict(variables["params"], sep="/").items()}
    sizes = {"data": 1, "model": 2}
    expected = {
        "shared_embed/embedding": P("model", None),
        "lm_head/kernel": P(None, "model"),
        "encoder_layers_0/self_attention/query/kernel": P(None, "model", None),
        "decoder_layers_1/cross_attention/out/kernel": P("model", None, None),
        "decoder_layers_0/mlp/wi_0/kernel": P(None, "model"),
        "decoder_layers_0/mlp/wi_1/kernel": P(None, "model"),
        "encoder_layers_1/mlp/wo/kernel": P("model", None),
        "encoder_bias/embedding": P(None, None),  # [buckets, heads]: small, replicated
    }
    for name, spec in expected.items():
        assert sharding.param_spec(name, flat[name], sizes) == spec, name


TINY_T5 = {**TINY_TRANSFORMER, "model.type": "t5", "model.relative_attention_num_buckets": 8,
           "model.relative_attention_max_distance": 16}


def test_build_model_takes_t5_fields_from_the_config():
    config = tiny_config(**{**TINY_T5, "model.feed_forward": "gated-gelu", "model.tie_output": True,
                            "model.dropout_rate": 0.2, "model.num_decoder_layers": 3})
    assert build_model(config, 11, 11).module.config == T5Config(
        vocab_size=11, d_model=16, d_kv=8, num_heads=2, d_ff=32, num_encoder_layers=1,
        num_decoder_layers=3, relative_attention_num_buckets=8, relative_attention_max_distance=16,
        feed_forward="gated-gelu", tie_output=True, scale_output=True, dropout_rate=0.2,
        special_tokens=build_model(config, 11, 11).special_tokens,
    )
    with pytest.raises(ValueError, match="one vocabulary on both sides"):
        build_model(config, 11, 12)


def test_t5_config_values_are_validated():
    with pytest.raises(ConfigError, match=r"config.model.feed_forward='swish'"):
        validate_config(tiny_config(**{**TINY_T5, "model.feed_forward": "swish"}))
    with pytest.raises(ConfigError, match=r"config.model.d_model=16: must be divisible"):
        validate_config(tiny_config(**{**TINY_T5, "model.num_heads": 3}))
    validate_config(tiny_config(**TINY_T5))


def test_a_t5_trains_with_scheduled_sampling():
    # exact mode: the decoder `step` scanned (train mode, dropout) to choose tokens, `forward`
    # to grade them
    overrides = (*TINY_T5.items(), ("model.dropout_rate", 0.1), ("teacher_forcing.p", 0.5),
                 *ROLLED.items())  # past the full unroll: the same maths, a faster compile
    *_, losses = train_tiny(overrides, steps=12)
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0], losses


def test_tied_head_and_unused_cross_bias_may_be_written(tmp_path):
    # Older checkpoints of t5-small also write the tied head and a cross-attention bias table
    # that the reference never reads: both load; a head that is not the embedding does not.
    def edit(tensors):
        tensors["lm_head.weight"] = tensors["shared.weight"].copy()
        tensors["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = (
            np.ones((8, 2), np.float32))

    directory = _edited_copy(tmp_path, "t5_v1_0", edit)
    _, variables = load_t5(directory)
    _, fixture = load_t5(FIXTURES / "t5_v1_0")
    jax.tree.map(np.testing.assert_array_equal, variables, fixture)

    tensors = load_file(directory / "model.safetensors")
    tensors["lm_head.weight"] = tensors["lm_head.weight"] * 2.0
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(PretrainedError, match=r"'lm_head\.weight' differs from 'shared\.weight'"):
        load_t5(directory)


def test_config_of_another_feed_forward_names_the_tensor(tmp_path):
    directory = tmp_path / "t5_v1_1"
    shutil.copytree(FIXTURES / "t5_v1_1", directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "feed_forward_proj": "relu"}))
    with pytest.raises(PretrainedError, match=r"wi_0\.weight' would fill .*another feed_forward"):
        load_t5(directory)


@dataclasses.dataclass(frozen=True)
class _GatheredBeams:
    """`model`'s seam without `init_beam_cache` / `reorder_cache`: beam search then gathers every
    cache leaf by beam at each step (T5's path before its cache was read in place)."""

    model: Any

    @property
    def special_tokens(self):
        return self.model.special_tokens

    def encode(self, variables, src_tokens):
        return self.model.encode(variables, src_tokens)

    def init_cache(self, variables, encoded, max_len):
        return self.model.init_cache(variables, encoded, max_len)

    def step(self, variables, encoded, cache, prev_tokens, position):
        return self.model.step(variables, encoded, cache, prev_tokens, position)


def test_beam_cache_in_place_equals_the_cache_gathered_by_beam():
    """T5's beam cache stays where each step wrote it (the `origin` table): steps under random
    reorders give the logits of the cache gathered by beam, and beam search finds the same
    hypotheses and scores."""
    config = tiny_config(**{**TINY_T5, "model.num_decoder_layers": 2})
    model = build_model(config, 11, 11)
    src = np.array([[4, 5, 6, 7, 1], [8, 9, 1, 0, 0], [10, 3, 5, 1, 0]], np.int32)
    variables = model.init(jax.random.PRNGKey(3), src, np.zeros((3, 7), np.int32))
    beams, length = 4, 7
    tiled = np.repeat(src, beams, axis=0)  # row g * beams + slot, as beam search tiles
    encoded = model.encode(variables, tiled)
    kept = model.init_beam_cache(variables, encoded, length, beams)
    gathered = model.init_cache(variables, encoded, length)
    assert "origin" in kept
    step = jax.jit(model.step)
    rng = np.random.default_rng(0)
    for position in range(length):
        tokens = jnp.asarray(rng.integers(2, 11, len(tiled)), jnp.int32)
        kept_logits, kept = step(variables, encoded, kept, tokens, position)
        gathered_logits, gathered = step(variables, encoded, gathered, tokens, position)
        np.testing.assert_allclose(kept_logits, gathered_logits, rtol=1e-5, atol=1e-5)
        rows = (np.arange(len(src))[:, None] * beams + rng.integers(0, beams, (len(src), beams)))
        kept = model.reorder_cache(kept, rows.reshape(-1))
        gathered = jax.tree.map(lambda leaf, rows=rows: leaf[rows.reshape(-1)], gathered)

    in_place, by_beam = (jax.device_get(decoding.beam_search(side, variables, src, beams, length))
                         for side in (model, _GatheredBeams(model)))
    np.testing.assert_array_equal(in_place[0], by_beam[0])
    np.testing.assert_array_equal(in_place[1], by_beam[1])
    np.testing.assert_allclose(in_place[2], by_beam[2], rtol=1e-5, atol=1e-5)
