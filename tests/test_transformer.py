"""The Transformer behind the step-function seam: KV-cache decoding against the parallel causal
pass, padding invariance, pre/post training, bf16 against fp32. Also the same padding checks for
the LSTM with norms, so the comparison is not Transformer-only."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_TRANSFORMER, tiny_config, train_tiny

from flax_s2s import metrics
from flax_s2s.data.vocab import PAD
from flax_s2s.models import build_model, decoder_inputs

VOCAB = 12
SRC = np.array([[4, 5, 6, 7, 0], [8, 9, 0, 0, 0], [10, 11, 4, 5, 6], [7, 0, 0, 0, 0]], np.int32)
TGT = np.array([[7, 6, 5, 4, 2, 0], [9, 8, 2, 0, 0, 0], [6, 5, 4, 11, 10, 2], [7, 2, 0, 0, 0, 0]],
               np.int32)
EXTRA_PAD = 3  # columns of PAD appended to source and target in the padding checks


def transformer_config(norm, norm_position, **overrides):
    model = {"model.type": "transformer", "model.norm": norm, "model.norm_position": norm_position,
             "model.d_model": 16, "model.num_heads": 2, "model.mlp_dim": 32,
             "model.num_encoder_layers": 1, "model.num_decoder_layers": 2,
             "max_src_len": SRC.shape[1] + EXTRA_PAD, "max_tgt_len": TGT.shape[1] + EXTRA_PAD}
    return tiny_config(**{**model, **overrides})


def lstm_config(norm, norm_position, **overrides):
    # Unidirectional: pad positions follow the real ones, so only the norm could leak padding.
    return tiny_config(**{"model.norm": norm, "model.norm_position": norm_position,
                          "model.bidirectional": False, **overrides})


def _perturb_batch_stats(variables, seed=7):
    """Running statistics far from init (mean 0, var 1), so that using them is visible."""
    stats = variables.get("batch_stats", {})
    leaves, treedef = jax.tree.flatten(stats)
    keys = jax.random.split(jax.random.PRNGKey(seed), max(len(leaves), 1))
    leaves = [leaf + jax.random.uniform(key, leaf.shape, minval=0.2, maxval=1.5)
              for leaf, key in zip(leaves, keys, strict=False)]
    return {**variables, "batch_stats": jax.tree.unflatten(treedef, leaves)}


@functools.cache
def model_outputs(config_fn, norm, norm_position, overrides=()):
    """Everything the seam tests compare, for one model, computed in one compiled call.

    Padding is checked in training mode for BatchNorm (batch statistics, where padding could
    leak in) and in eval mode otherwise (the models have no dropout, so the modes agree)."""
    config = config_fn(norm, norm_position, **dict(overrides))
    model = build_model(config, VOCAB, VOCAB)
    variables = model.init(jax.random.PRNGKey(0), SRC, TGT)
    variables = _perturb_batch_stats(variables)
    train = norm == "batch"
    pad = ((0, 0), (0, EXTRA_PAD))

    def memory_and_logits(variables, src, tgt_inputs):
        if not train:
            encoded = model.encode(variables, src)
            return encoded["memory"], model.forward(variables, encoded, tgt_inputs), {}
        encoded, stats = model.encode(variables, src, train=True, update_stats=True)
        logits, stats = model.forward({**variables, "batch_stats": stats}, encoded, tgt_inputs,
                                      train=True, update_stats=True)
        return encoded["memory"], logits, stats

    @jax.jit
    def run(variables):
        tgt_inputs = decoder_inputs(TGT)
        encoded = model.encode(variables, SRC)
        outputs = {"logits": model.forward(variables, encoded, tgt_inputs)}
        if config.model.type == "transformer":  # the recurrent forward *is* the scanned step
            outputs["step_logits"] = model.scanned_forward(variables, encoded, tgt_inputs)
        for prefix, src, inputs in [("", SRC, tgt_inputs),
                                    ("padded_", np.pad(SRC, pad), jnp.pad(tgt_inputs, pad))]:
            memory, logits, stats = memory_and_logits(variables, src, inputs)
            outputs.update({f"{prefix}memory": memory, f"{prefix}checked_logits": logits,
                            f"{prefix}stats": stats})
        return outputs

    return jax.device_get(run(variables)), jax.device_get(variables)


# Every norm kind, both positions between them (BatchNorm post trains below); one case also
# covers learned positions and shared, tied embeddings.
LEARNED_SHARED_TIED = (("model.positions", "learned"), ("model.share_embeddings", True),
                       ("model.tie_output", True))
TRANSFORMER_CASES = [("layer", "pre", ()), ("rms", "post", LEARNED_SHARED_TIED),
                     ("batch", "pre", ()), ("none", "post", ())]


def _case_id(case):
    return "-".join(str(part) for part in case[:2]) + ("-learned-tied" if case[2] else "")


@pytest.mark.parametrize("norm, norm_position, overrides", TRANSFORMER_CASES,
                         ids=[_case_id(case) for case in TRANSFORMER_CASES])
def test_kv_cache_steps_equal_parallel_causal_forward_at_every_position(
        norm, norm_position, overrides):
    outputs, variables = model_outputs(transformer_config, norm, norm_position, overrides)
    # The scan over `step` reads and writes the KV cache; `forward` is one causal pass.
    np.testing.assert_allclose(outputs["step_logits"], outputs["logits"], rtol=1e-4, atol=1e-4)
    assert np.abs(np.diff(outputs["logits"], axis=1)).max() > 1e-2, "positions should differ"
    if overrides:
        assert "tgt_embed" not in variables["params"] and "output_proj" not in variables["params"]


def _assert_same_at_real_positions(got, expected, mask):
    got = got[:, : expected.shape[1]]
    np.testing.assert_allclose(got[mask], expected[mask], rtol=1e-4, atol=1e-5)


PADDING_CASES = [(transformer_config, *case) for case in TRANSFORMER_CASES]
PADDING_CASES += [(lstm_config, "batch", "pre", ())]


PADDING_IDS = [f"{c[0].__name__.split('_')[0]}-{_case_id(c[1:])}" for c in PADDING_CASES]


@pytest.mark.parametrize("config_fn, norm, norm_position, overrides", PADDING_CASES,
                         ids=PADDING_IDS)
def test_padding_does_not_change_outputs_at_real_positions(
        config_fn, norm, norm_position, overrides):
    outputs, _ = model_outputs(config_fn, norm, norm_position, overrides)
    src_mask, tgt_mask = SRC != PAD, decoder_inputs(TGT) != PAD
    _assert_same_at_real_positions(outputs["padded_memory"], outputs["memory"], src_mask)
    _assert_same_at_real_positions(
        outputs["padded_checked_logits"], outputs["checked_logits"], tgt_mask)
    # BatchNorm's running statistics moved, by the same amount with or without the padding.
    assert bool(jax.tree.leaves(outputs["stats"])) == (norm == "batch")
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6),
                 outputs["padded_stats"], outputs["stats"])


def test_padding_check_can_fail():
    """The comparison above sees a leak: a source padded with a real token instead of PAD."""
    outputs, variables = model_outputs(transformer_config, "layer", "pre", ())
    model = build_model(transformer_config("layer", "pre"), VOCAB, VOCAB)
    filled = np.pad(SRC, ((0, 0), (0, EXTRA_PAD)), constant_values=5)
    leaky_memory = np.asarray(jax.jit(model.encode)(variables, filled)["memory"])
    with pytest.raises(AssertionError):
        _assert_same_at_real_positions(leaky_memory, outputs["memory"], SRC != PAD)


def test_batch_norm_refuses_step_by_step_training():
    config = transformer_config("batch", "pre")
    model = build_model(config, VOCAB, VOCAB)
    _, variables = model_outputs(transformer_config, "batch", "pre", ())

    def train_one_step():
        encoded = model.encode(variables, SRC)
        cache = model.init_cache(variables, encoded, TGT.shape[1])
        return model.step(variables, encoded, cache, decoder_inputs(TGT)[:, 0], 0, train=True,
                          update_stats=True)

    with pytest.raises(ValueError, match="parallel teacher-forced path"):
        jax.eval_shape(train_one_step)  # refused while tracing


def test_the_cache_holds_the_source_keys_heads_major_and_beam_steps_leave_them_in_place():
    """`encode` holds the cross-attention keys and values ([batch, src_len, heads, head_dim]
    per decoder layer) for the parallel pass; `init_cache` copies them once, heads-major, for
    the steps (read from `encoded`, every step transposed them). Beam search's cache follows
    its beams through `origin`, so neither a step nor a reorder changes that copy."""
    config = transformer_config("layer", "pre")
    model = build_model(config, VOCAB, VOCAB)
    variables = model.init(jax.random.PRNGKey(0), SRC, TGT)
    encoded = model.encode(variables, SRC)
    heads = config.model.num_heads
    kv_shape = (SRC.shape[0], SRC.shape[1], heads, config.model.d_model // heads)
    assert len(encoded["cross"]) == config.model.num_decoder_layers
    assert all(kv[name].shape == kv_shape for kv in encoded["cross"] for name in ("key", "value"))
    cache = model.init_beam_cache(variables, encoded, TGT.shape[1], 2)
    assert set(cache) == {"self", "cross", "origin"}
    for cached, source in zip(cache["cross"], encoded["cross"], strict=True):
        for name in ("key", "value"):
            np.testing.assert_array_equal(cached[name], np.transpose(source[name], (0, 2, 1, 3)))
    _, stepped = model.step(variables, encoded, cache, TGT[:, 0], 0)
    reordered = model.reorder_cache(stepped, jnp.array([1, 1, 2, 2]))  # rows within each input
    for name in ("key", "value"):
        np.testing.assert_array_equal(reordered["cross"][0][name], cache["cross"][0][name])


def test_shared_embeddings_need_one_vocabulary():
    config = transformer_config("layer", "pre", **{"model.share_embeddings": True})
    with pytest.raises(ValueError, match="share_embeddings"):
        build_model(config, VOCAB, VOCAB + 1)


# --- training: pre and post, float32 and bfloat16 ---------------------------------------------


@pytest.mark.parametrize("norm, norm_position", [("layer", "pre"), ("batch", "post")])
def test_pre_and_post_train_with_finite_falling_loss(norm, norm_position):
    # tests/test_norms.py checks the running statistics of this same BatchNorm run.
    *_, losses = train_tiny((*TINY_TRANSFORMER.items(), ("model.norm", norm),
                             ("model.norm_position", norm_position)))
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] < 0.8 * losses[0], losses


def test_bfloat16_compute_loss_is_close_to_float32():
    config, model32, _, batch, _, state, _ = train_tiny(
        (*TINY_TRANSFORMER.items(), ("model.norm", "layer"), ("model.norm_position", "pre")))
    config = config.copy_and_resolve_references()
    config.model.dtype = "bfloat16"
    model16 = build_model(config, model32.module.config.src_vocab_size,
                          model32.module.config.tgt_vocab_size)
    weights = (batch["tgt_tokens"] != PAD).astype(np.float32)

    def loss(model):
        @jax.jit
        def mean_loss(variables):
            encoded = model.encode(variables, batch["src_tokens"])
            logits = model.forward(variables, encoded, decoder_inputs(batch["tgt_tokens"]))
            loss_sum = metrics.cross_entropy_sum(logits, batch["tgt_tokens"], weights)
            return loss_sum / weights.sum(), encoded["memory"].dtype == jnp.bfloat16

        mean, computed_in_bf16 = mean_loss(state.variables)
        return float(mean), bool(computed_in_bf16)

    assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {np.dtype(np.float32)}
    (loss32, bf16_in_32), (loss16, bf16_in_16) = loss(model32), loss(model16)
    assert bf16_in_16 and not bf16_in_32  # the compute really is bf16
    assert np.isfinite(loss16)
    assert abs(loss16 - loss32) < 0.02 * loss32 + 0.01, (loss16, loss32)


def test_unequal_stacks_have_their_own_heads_and_widths_and_steps_equal_forward():
    """Encoder 3 heads of 4 and MLP 20, decoder 2 heads of 6 and MLP 28: each stack's
    parameters, the decoder's caches and cross keys have its own shape, and the KV-cache steps
    (through the plain and the beam cache) equal the parallel causal pass."""
    from flax_s2s.models.seam import Seq2Seq
    from flax_s2s.models.transformer import Transformer, TransformerConfig

    config = TransformerConfig(VOCAB, VOCAB, d_model=12, num_heads=3, mlp_dim=20,
                               decoder_num_heads=2, decoder_mlp_dim=28, num_encoder_layers=1,
                               num_decoder_layers=2, norm="layer", attention="xla")
    model = Seq2Seq(Transformer(config))
    variables = model.init(jax.random.PRNGKey(0), SRC, TGT)
    params = variables["params"]
    assert params["encoder_layers_0"]["self_attention"]["query"]["kernel"].shape == (12, 3, 4)
    assert params["encoder_layers_0"]["mlp"]["hidden"]["kernel"].shape == (12, 20)
    for attention in ("self_attention", "cross_attention"):
        assert params["decoder_layers_1"][attention]["key"]["kernel"].shape == (12, 2, 6)
    assert params["decoder_layers_1"]["mlp"]["hidden"]["kernel"].shape == (12, 28)
    tgt_inputs = decoder_inputs(TGT)
    encoded = model.encode(variables, SRC)
    assert encoded["cross"][0]["key"].shape == (*SRC.shape, 2, 6)
    logits = model.forward(variables, encoded, tgt_inputs)
    np.testing.assert_allclose(model.scanned_forward(variables, encoded, tgt_inputs), logits,
                               rtol=1e-4, atol=1e-4)
    cache = model.module.apply(variables, encoded, TGT.shape[1], 1,
                               method=type(model.module).init_beam_cache)
    assert cache["self"][0]["key"].shape == (SRC.shape[0], 2, TGT.shape[1], 6)  # heads-major
    beam_logits, _ = model.step(variables, encoded, cache, tgt_inputs[:, 0], 0)
    np.testing.assert_allclose(beam_logits, logits[:, 0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="decoder_num_heads=5"):
        TransformerConfig(VOCAB, VOCAB, d_model=12, num_heads=3, decoder_num_heads=5)


def test_a_batch_one_tied_output_equals_the_batched_one_and_numpy():
    """A one-row step takes the matrix-vector form of the tied output projection
    (`tied_logits`): its logits equal NumPy's x @ table.T, and greedy (with an output bias) decoding of each
    row alone returns the tokens and scores of the same rows decoded together."""
    from flax_s2s import decoding
    from flax_s2s.models.seam import Seq2Seq
    from flax_s2s.models.transformer import Transformer, TransformerConfig, tied_logits

    config = TransformerConfig(VOCAB, VOCAB, d_model=16, num_heads=2, mlp_dim=32,
                               num_encoder_layers=1, num_decoder_layers=1, share_embeddings=True,
                               tie_output=True, output_bias=True, attention="xla")
    model = Seq2Seq(Transformer(config))
    variables = model.init(jax.random.PRNGKey(0), SRC, TGT)
    bias = jax.random.normal(jax.random.PRNGKey(1), (VOCAB,))
    variables = {"params": {**variables["params"], "output_bias": bias}}
    table = np.asarray(variables["params"]["src_embed"]["embedding"])
    x = np.random.default_rng(0).normal(size=(1, 1, 16)).astype(np.float32)
    got = nn.Embed(VOCAB, 16).apply({"params": {"embedding": table}}, x, method=tied_logits)
    np.testing.assert_allclose(got, x @ table.T, rtol=1e-5, atol=1e-5)
    tokens, lengths, scores = decoding.greedy(model, variables, SRC, 6)
    for row in range(SRC.shape[0]):
        one = decoding.greedy(model, variables, SRC[row:row + 1], 6)
        np.testing.assert_array_equal(one[0][0], tokens[row])
        assert one[1][0] == lengths[row]
        np.testing.assert_allclose(one[2][0], scores[row], rtol=1e-5, atol=1e-5)


def test_bfloat16_dense_layers_accumulate_in_float32_and_round_once():
    """`float32_accumulation`, the matmul of every dense layer: bfloat16 operands give the
    float32 product of those same bfloat16 numbers (NumPy), rounded once to bfloat16 (within one
    rounding step); float32 operands give NumPy's float32 product."""
    from flax_s2s.models.dense import float32_accumulation

    rng = np.random.default_rng(0)
    lhs, rhs = rng.normal(size=(3, 64)).astype(np.float32), rng.normal(size=(64, 5)).astype(np.float32)
    numbers = (((1,), (0,)), ((), ()))
    got32 = float32_accumulation(jnp.asarray(lhs), jnp.asarray(rhs), numbers)
    assert got32.dtype == jnp.float32
    np.testing.assert_allclose(got32, lhs @ rhs, rtol=1e-5, atol=1e-5)
    a, b = jnp.asarray(lhs, jnp.bfloat16), jnp.asarray(rhs, jnp.bfloat16)
    got = float32_accumulation(a, b, numbers)
    assert got.dtype == jnp.bfloat16
    exact = np.asarray(a, np.float32) @ np.asarray(b, np.float32)
    step = 2.0 ** (np.floor(np.log2(np.abs(exact))) - 7)  # one bfloat16 rounding step
    assert (np.abs(np.asarray(got, np.float32) - exact) <= step).all()


@pytest.mark.parametrize("lhs_shape, rhs_shape, numbers, spec", [
    ((2, 3, 4), (4, 5), (((2,), (0,)), ((), ())), "blk,kn->bln"),  # Dense
    ((2, 3, 4), (4, 2, 3), (((2,), (0,)), ((), ())), "blk,khd->blhd"),  # query/key/value
    ((2, 3, 2, 3), (2, 3, 4), (((2, 3), (0, 1)), ((), ())), "blhd,hdk->blk"),  # attention out
    ((2, 3, 4), (7, 4), (((2,), (1,)), ((), ())), "blk,vk->blv"),  # tied output, x @ table.T
])
def test_dense_dots_run_as_2d_matmuls_with_numpys_outputs_and_gradients(
    lhs_shape, rhs_shape, numbers, spec
):
    """`float32_accumulation` turns each dense layer's dot into one 2D matmul (`as_matmul`;
    in bfloat16 `dense.matmul` with its own backward pass, whose weight gradient is computed
    transposed when K > N, as for the attention output here): its output and both gradients (of
    sum(out * g)) equal NumPy's einsum and its transposes in float64, and autodiff of
    `lax.dot_general` on the unflattened form; in bfloat16, the old form's (float32 products,
    one rounding) to within one bfloat16 rounding step."""
    from flax_s2s.models.dense import as_matmul, float32_accumulation

    rng = np.random.default_rng(0)
    lhs, rhs = rng.normal(size=lhs_shape), rng.normal(size=rhs_shape)
    out_spec = spec.split("->")[1]
    g = rng.normal(size=np.einsum(spec, lhs, rhs).shape)
    assert as_matmul(jnp.asarray(lhs), jnp.asarray(rhs), numbers) is not None

    def total(dot, a, b):
        return (dot(a, b, numbers) * jnp.asarray(g, jnp.float32)).sum()

    args = (jnp.asarray(lhs, jnp.float32), jnp.asarray(rhs, jnp.float32))
    out = float32_accumulation(*args, numbers)
    grads = jax.grad(lambda a, b: total(float32_accumulation, a, b), argnums=(0, 1))(*args)
    old = jax.grad(lambda a, b: total(jax.lax.dot_general, a, b), argnums=(0, 1))(*args)
    lhs_spec, rhs_spec = spec.split("->")[0].split(",")
    expected = (np.einsum(f"{out_spec},{rhs_spec}->{lhs_spec}", g, rhs),
                np.einsum(f"{lhs_spec},{out_spec}->{rhs_spec}", lhs, g))
    np.testing.assert_allclose(out, np.einsum(spec, lhs, rhs), rtol=1e-5, atol=1e-5)
    for got, before, want in zip(grads, old, expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got, before, rtol=1e-5, atol=1e-5)

    def old_form(a, b, numbers):
        return jax.lax.dot_general(a, b, numbers, preferred_element_type=jnp.float32).astype(a.dtype)

    args16 = tuple(a.astype(jnp.bfloat16) for a in args)
    for dot in (float32_accumulation, old_form):
        assert dot(*args16, numbers).dtype == jnp.bfloat16
    grads16 = jax.grad(lambda a, b: total(float32_accumulation, a, b), argnums=(0, 1))(*args16)
    old16 = jax.grad(lambda a, b: total(old_form, a, b), argnums=(0, 1))(*args16)
    for got, before in zip(grads16, old16, strict=True):
        got, before = np.asarray(got, np.float32), np.asarray(before, np.float32)
        step = 2.0 ** (np.floor(np.log2(np.maximum(np.abs(before), 1e-30))) - 7)
        assert (np.abs(got - before) <= step).all()
