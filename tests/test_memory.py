"""Memory for larger checkpoints: rematerialised layers, frozen parameters and LoRA.

Each is compared with an independent reference: remat with the plain model; frozen parameters
with their starting values and with a count of the trained parameters' moments made here; LoRA
with the base model and with the unmerged LoRA computation, x W + (alpha / rank) x A B, added to
each targeted projection's output by flax's method interception (the library merges the weights
instead)."""

from __future__ import annotations

import dataclasses
import pathlib
import re

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_config

from flax_s2s import lora, sharding, training
from flax_s2s.checkpoint import Checkpointer
from flax_s2s.errors import ConfigError
from flax_s2s.models import Seq2Seq, decoder_inputs
from flax_s2s.models.t5 import T5, T5Config
from flax_s2s.models.transformer import Transformer, TransformerConfig
from flax_s2s.pretrained import export_pretrained, load_pretrained
from flax_s2s.training import frozen

BART = pathlib.Path(__file__).parent / "fixtures" / "bart"  # vocabulary 40, pad 1, bos 0, eos 2
_rng = np.random.default_rng(0)
BATCHES = [{"src_tokens": _rng.integers(3, 40, (4, 7)).astype(np.int32),
            "tgt_tokens": _rng.integers(3, 40, (4, 5)).astype(np.int32)} for _ in range(5)]
for _batch in BATCHES:  # some padding, so that masks matter
    _batch["src_tokens"][0, 5:] = 1
    _batch["tgt_tokens"][1, 3:] = 1


def _flat(tree) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(tree, sep="/").items()}


# --- remat ---

REMAT_MODELS = {
    "transformer": (Transformer, TransformerConfig(40, 40, d_model=16, num_heads=2, mlp_dim=24,
                                                   num_encoder_layers=1, num_decoder_layers=1,
                                                   dropout_rate=0.1, norm_position="post")),
    "t5": (T5, T5Config(vocab_size=40, d_model=16, d_kv=8, num_heads=2, d_ff=24,
                        num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.1,
                        feed_forward="gated-gelu")),
}


def _loss_grads_and_greedy(module_class, config):
    model = Seq2Seq(module_class(config))
    src, tgt = jnp.asarray(BATCHES[0]["src_tokens"]), jnp.asarray(BATCHES[0]["tgt_tokens"])
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), src, tgt)

    def loss(params):  # with dropout: remat must replay the same masks
        encoded = model.encode({"params": params}, src, train=True, rng=jax.random.PRNGKey(1))
        logits = model.forward({"params": params}, encoded,
                               decoder_inputs(tgt, model.special_tokens.bos), train=True,
                               rng=jax.random.PRNGKey(2))
        return optax.softmax_cross_entropy_with_integer_labels(logits, tgt).mean()

    value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"])
    # two decoder steps over the KV cache: the logits of each (one compiled step; run eagerly,
    # op by op, the two steps cost 5x its compile)
    encoded = jax.jit(model.encode)(variables, src)
    cache, steps = jax.jit(model.init_cache, static_argnums=2)(variables, encoded, 4), []
    step = jax.jit(model.step)
    for position in range(2):
        logits, cache = step(variables, encoded, cache, tgt[:, position], position)
        steps.append(np.asarray(logits))
    traced = str(jax.make_jaxpr(loss)(variables["params"]))
    rematerialised = traced.count("remat2[") + traced.count("checkpoint[")
    return value, grads, np.stack(steps), rematerialised


@pytest.mark.parametrize("family", sorted(REMAT_MODELS))
def test_remat_gives_the_plain_models_loss_gradients_and_steps(family):
    module_class, config = REMAT_MODELS[family]
    plain = _loss_grads_and_greedy(module_class, config)
    # the policy that keeps some values, so that saved and recomputed ones meet
    remat = _loss_grads_and_greedy(module_class, dataclasses.replace(
        config, remat="layer", remat_policy="dots_with_no_batch_dims_saveable"))
    assert plain[3] == 0 and remat[3] == config.num_encoder_layers + config.num_decoder_layers
    np.testing.assert_allclose(remat[0], plain[0], rtol=1e-5)
    expected = _flat(plain[1])
    assert set(_flat(remat[1])) == set(expected)  # the same parameter names
    for name, grad in _flat(remat[1]).items():
        np.testing.assert_allclose(grad, expected[name], rtol=1e-5, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(remat[2], plain[2], rtol=1e-5, atol=1e-6)  # over the KV cache


def test_a_dots_remat_policy_saves_the_float32_dense_dots(capsys):
    """Under `dots_with_no_batch_dims_saveable` the dense layers' float32 dots stay saveable
    (their 2D form keeps autodiff's backward, which the policy can see; a custom_vjp hides its
    dot and the policy would save nothing): both dots' outputs are saved, not recomputed."""
    from jax.ad_checkpoint import print_saved_residuals

    from flax_s2s.models.dense import float32_accumulation

    numbers = (((2,), (0,)), ((), ()))

    def two_layers(x, w1, w2):
        hidden = jnp.tanh(float32_accumulation(x, w1, numbers))
        return jnp.tanh(float32_accumulation(hidden, w2, numbers)).sum()

    policy = jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    print_saved_residuals(jax.checkpoint(two_layers, policy=policy),
                          jnp.ones((2, 3, 4)), jnp.ones((4, 5)), jnp.ones((5, 6)))
    saved = capsys.readouterr().out
    assert saved.count("output of dot_general") == 2, saved


@pytest.mark.parametrize("fields, message", [
    ({"model.remat": "block"}, "config.model.remat='block'"),
    ({"model.remat": "layer", "model.remat_policy": "dots"}, "config.model.remat_policy='dots'"),
    ({"model.remat": "layer", "model.type": "lstm"}, "config.model.remat='layer'"),
    ({"frozen": ("embed(",)}, "config.frozen: 'embed(' is not a regex"),
    ({"lora.rank": 2, "lora.targets": ("query[",)}, "config.lora.targets: 'query['"),
    ({"lora.rank": -1}, "config.lora.rank=-1"),
])
def test_memory_fields_are_checked_by_name(fields, message):
    config = tiny_config(**{"model.type": "transformer", **fields})
    with pytest.raises(ConfigError, match=re.escape(message)):
        training.validate_config(config)


# --- frozen parameters and LoRA, on the BART fixture ---

def _bart_job(**fields):
    """(config, model, base variables, tx, jitted step) of a fine-tune of the BART fixture."""
    config = tiny_config(**{"model.type": "bart", "max_src_len": 7, "max_tgt_len": 5,
                            "optimizer.learning_rate": 3e-2, "optimizer.warmup_steps": 1,
                            **fields})
    model, variables = load_pretrained(BART)
    tx = training.make_optimizer(config)
    return config, model, variables, tx, jax.jit(training.make_train_step(model, tx, config))


def _train(job, steps: int, state=None):
    config, model, variables, tx, step = job
    if state is None:
        state = training.create_train_state(model, tx, config.seed, BATCHES[0], None, variables,
                                            lora_spec=lora.LoraSpec.from_config(config))
    for batch in BATCHES[:steps]:
        state, _ = step(state, batch)
    return state


FROZEN = (r"(^|/)src_embed/", r"^encoder_layers_0/")


@pytest.fixture(scope="module")
def frozen_run():
    job = _bart_job(frozen=FROZEN)
    return job, _train(job, 3)


def test_frozen_parameters_stay_bit_identical_and_hold_no_optimizer_state(frozen_run):
    (config, _, variables, _, _), state = frozen_run
    before, after = _flat(variables["params"]), _flat(state.params)
    is_frozen = {name: name.startswith("encoder_layers_0/") or name.startswith("src_embed/")
                 for name in before}
    assert sum(is_frozen.values()) > 5 and not all(is_frozen.values())
    for name, value in before.items():
        if is_frozen[name]:
            np.testing.assert_array_equal(after[name], value, err_msg=name)
        else:
            assert not np.array_equal(after[name], value), name
    # adam's two moments of each trained parameter, and step counts: nothing of a frozen one
    trained = sum(v.size for name, v in before.items() if not is_frozen[name])
    moments = [leaf for leaf in jax.tree.leaves(state.opt_state) if leaf.ndim > 0]
    assert sum(leaf.size for leaf in moments) == 2 * trained


def test_a_frozen_regex_that_matches_nothing_is_one_line_naming_it(frozen_run):
    (config, _, variables, _, _), _ = frozen_run
    config = config.copy_and_resolve_references()
    config.frozen = (FROZEN[0], "encoder/layer_9")
    with pytest.raises(ConfigError) as error:
        frozen.check_params(config, variables["params"])
    assert "config.frozen: 'encoder/layer_9' matches no parameter path" in str(error.value)
    assert "\n" not in str(error.value)
    config.frozen, config.lora.rank, config.lora.targets = (), 2, ("attention/qkv",)
    with pytest.raises(ConfigError, match="config.lora.targets: 'attention/qkv' matches no"):
        lora.check_targets(lora.LoraSpec.from_config(config), variables["params"])


LORA = {"lora.rank": 2, "lora.alpha": 4.0, "lora.dropout": 0.25,
        "lora.targets": (r"attention/(query|value)/kernel$", r"mlp/output/kernel$",
                         r"self_attention/out/kernel$")}


@pytest.fixture(scope="module")
def lora_job():
    return _bart_job(**LORA)


def _logits(model, params, batch):
    variables = {"params": params}
    encoded = model.encode(variables, jnp.asarray(batch["src_tokens"]))
    inputs = decoder_inputs(jnp.asarray(batch["tgt_tokens"]), model.special_tokens.bos)
    return np.asarray(model.forward(variables, encoded, inputs))


def _unmerged_lora_logits(model, params, batch):
    """The LoRA model's logits computed as LoRA is defined, without merging: each targeted
    projection's output plus scale * (x A) B, x its input."""
    factors = flax.traverse_util.flatten_dict(params["lora"]["factors"])
    scale = params["lora"]["scale"]

    def add_update(next_fun, args, kwargs, context):
        y = next_fun(*args, **kwargs)
        path = (*context.module.path, "kernel")
        if context.method_name != "__call__" or (*path, "a") not in factors:
            return y
        a, b = factors[(*path, "a")], factors[(*path, "b")]
        x = args[0].reshape(*args[0].shape[:-lora.input_axes(path)], -1)  # [.., in]
        return y + (scale * (x @ a) @ b).reshape(y.shape)

    base = {k: v for k, v in params.items() if k != "lora"}
    with nn.intercept_methods(add_update):
        return _logits(model, base, batch)


def test_lora_at_initialisation_gives_the_base_logits_exactly(lora_job):
    config, model, variables, tx, _ = lora_job
    state = _train(lora_job, 0)
    assert set(state.params) == set(variables["params"]) | {"lora"}
    np.testing.assert_array_equal(_logits(model, lora.merged(state.params), BATCHES[1]),
                                  _logits(model, variables["params"], BATCHES[1]))


@pytest.fixture(scope="module")
def lora_run(lora_job):
    return _train(lora_job, 4)


def test_lora_trains_the_factors_alone_and_exports_its_logits(lora_job, lora_run, tmp_path):
    config, model, variables, tx, _ = lora_job
    state = lora_run
    params = _flat(state.params)
    for name, value in _flat(variables["params"]).items():  # the base: bit-identical
        np.testing.assert_array_equal(params[name], value, err_msg=name)
    b_factors = [v for name, v in params.items() if name.endswith("/b")]
    # q and v of 4 self- and 2 cross-attentions, 4 MLP outputs, 4 self-attention outputs
    assert len(b_factors) == 12 + 4 + 4 and all(np.abs(b).max() > 0 for b in b_factors)
    factors = sum(v.size for name, v in params.items() if lora.is_factor(name))
    moments = [leaf for leaf in jax.tree.leaves(state.opt_state) if leaf.ndim > 0]
    assert sum(leaf.size for leaf in moments) == 2 * factors

    expected = _unmerged_lora_logits(model, state.params, BATCHES[1])
    assert np.abs(expected - _logits(model, variables["params"], BATCHES[1])).max() > 1e-3
    out = export_pretrained({"params": state.params}, BART, tmp_path / "merged")
    exported_model, exported = load_pretrained(out)  # a plain checkpoint
    np.testing.assert_allclose(_logits(exported_model, exported["params"], BATCHES[1]), expected,
                               rtol=1e-5, atol=1e-5)


def test_lora_resumes_bit_exact(lora_job, lora_run, tmp_path):
    config, model, variables, tx, step = lora_job
    spec, mesh = lora.LoraSpec.from_config(config), sharding.make_mesh((-1, 1))
    abstract = training.abstract_train_state(model, tx, config.seed, BATCHES[0], lora_spec=spec)
    template = sharding.with_shardings(
        abstract, sharding.train_state_shardings(abstract, tx, mesh))
    checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
    checkpointer.save(4, lora_run, None, {"seed": config.seed})
    checkpointer.close()
    restored = Checkpointer(str(tmp_path / "checkpoints")).restore(template)
    (expected, expected_metrics), (got, got_metrics) = (step(s, BATCHES[4]) for s in (lora_run, restored))
    assert float(got_metrics["loss"]) == float(expected_metrics["loss"])
    jax.tree.map(np.testing.assert_array_equal, got.params, expected.params)
    jax.tree.map(np.testing.assert_array_equal, got.opt_state, expected.opt_state)
    # what decoding, evaluation and export read: the merged weights
    merged = Checkpointer(str(tmp_path / "checkpoints")).restore_variables()
    jax.tree.map(np.testing.assert_array_equal, merged["params"], lora.merged(lora_run.params))
