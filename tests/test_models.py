"""build_model: each module's hyperparameters come from config.model by field name."""

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from flax_s2s.models import build_model
from flax_s2s.models.rnn import RnnConfig
from flax_s2s.models.transformer import TransformerConfig


def test_an_rnn_takes_its_fields_from_the_config():
    config = tiny_config(**{
        "model.emb_dim": 12, "model.hidden_dim": 24, "model.cell": "gru",
        "model.bidirectional": False, "model.num_encoder_layers": 2, "model.attention_dim": 8,
        "model.dropout_rate": 0.1, "model.norm": "rms", "model.norm_position": "post",
        "model.dtype": "bfloat16", "max_tgt_len": 9,
    })
    assert build_model(config, 7, 11).module.config == RnnConfig(
        src_vocab_size=7, tgt_vocab_size=11, emb_dim=12, hidden_dim=24, cell="gru",
        bidirectional=False, num_encoder_layers=2, attention_dim=8, dropout_rate=0.1, norm="rms",
        norm_position="post", max_decode_len=9, dtype=jnp.bfloat16,
    )


def test_a_transformer_takes_its_fields_from_the_config():
    config = tiny_config(**{
        "model.type": "transformer", "model.d_model": 16, "model.num_heads": 2,
        "model.mlp_dim": 24, "model.num_encoder_layers": 3, "model.num_decoder_layers": 1,
        "model.share_embeddings": True, "model.tie_output": True, "model.positions": "learned",
        "model.dropout_rate": 0.2, "model.norm": "layer", "model.norm_position": "post",
        "model.attention": "xla", "max_src_len": 10, "max_tgt_len": 7,
    })
    assert build_model(config, 9, 9).module.config == TransformerConfig(
        src_vocab_size=9, tgt_vocab_size=9, d_model=16, num_heads=2, mlp_dim=24,
        num_encoder_layers=3, num_decoder_layers=1, share_embeddings=True, tie_output=True,
        positions="learned", max_positions=10, dropout_rate=0.2, norm="layer",
        norm_position="post", dtype=jnp.float32, attention="xla",
    )


def test_model_configs_are_hashable_and_refuse_unknown_choices():
    rnn = RnnConfig(5, 6)
    assert hash(rnn) == hash(dataclasses.replace(rnn))
    with pytest.raises(ValueError, match="model.cell"):
        RnnConfig(5, 6, cell="rnn")
    with pytest.raises(ValueError, match="model.positions"):
        TransformerConfig(5, 6, positions="rotary")


def test_rnn_parameters_keep_the_checkpoint_layout():
    """Workdirs saved before must keep loading: these paths are what their checkpoints hold."""
    model = build_model(tiny_config(), 7, 11)
    src, tgt = np.ones((2, 5), np.int32), np.ones((2, 4), np.int32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), src, tgt)["params"]
    paths = {"/".join(path) for path in flax.traverse_util.flatten_dict(params)}
    gates = ("hi", "hf", "hg", "ho", "ii", "if", "ig", "io")
    cells = ("enc_fwd_0/cell", "enc_bwd_0/cell", "decoder_cell")
    assert {path.rsplit("/", 1)[0] for path in paths} == {
        "src_embed", "tgt_embed", "bridge", "attention/query_proj", "attention/key_proj",
        "attention/energy", "attentional", "output_proj",
        *(f"{cell}/{gate}" for cell in cells for gate in gates),
    }
    assert params["src_embed"]["embedding"].shape == (7, 16)
    assert params["output_proj"]["kernel"].shape == (32, 11)
