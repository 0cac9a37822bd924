"""The Transformer's attention in the form a fused GPU kernel takes (key lengths and a causal
flag) computes what the boolean masks it replaces computed: for encoder self-attention over a
padded source, causal decoder self-attention over a padded target, cross-attention, and one
cached decoding step. Checked on CPU, on the path the GPU runs with implementation="xla", against
`jax.nn.dot_product_attention(mask=...)` with the masks built as before and against NumPy; values
and gradients. Also which implementation is chosen where."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_TRANSFORMER, tiny_config

from flax_s2s.data.vocab import PAD
from flax_s2s.models import build_model, decoder_inputs, transformer_layers
from flax_s2s.models.attention import attend, attention_implementation, key_lengths

HEADS, HEAD_DIM = 2, 8
# Right-padded sources; the last row is all padding (as in the last eval batch).
SRC = np.array([[4, 5, 6, 7, 8, 0, 0], [9, 4, 0, 0, 0, 0, 0], [5, 6, 7, 8, 9, 10, 11],
                [0, 0, 0, 0, 0, 0, 0]], np.int32)
REAL_ROWS = (SRC != PAD).any(1)
TGT = np.array([[7, 6, 2, 0, 0], [9, 8, 4, 5, 2], [6, 2, 0, 0, 0], [2, 0, 0, 0, 0]], np.int32)


def _qkv(q_len, kv_len, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    shapes = [(len(SRC), q_len, HEADS, HEAD_DIM)] + [(len(SRC), kv_len, HEADS, HEAD_DIM)] * 2
    return [jnp.asarray(rng.normal(size=shape), dtype) for shape in shapes]


def _numpy_attention(q, k, v, mask):
    """float64 softmax attention; mask broadcasts to [batch, heads, q_len, kv_len] (a row with
    no key gives NaN)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    scores = np.where(mask, scores, -np.inf)
    with np.errstate(invalid="ignore"):
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", weights, v)


# name -> (q_len, kv_len, today's boolean mask, the new (kv_lengths, causal), rows to compare).
# Rows: all, except the all-padding source row where the mask is the source's padding: it has no
# key to attend to, and the lengths form gives it its first key (see `key_lengths`).
SRC_MASK = SRC != PAD
ALL_ROWS = np.ones(len(SRC), bool)
STEP_LEN, STEP_POSITION = 6, 3
CASES = {
    "encoder self-attention, padded source": (
        SRC.shape[1], SRC.shape[1], SRC_MASK[:, None, None, :], (key_lengths(SRC_MASK), False),
        REAL_ROWS),
    "decoder causal self-attention, padded target": (
        TGT.shape[1], TGT.shape[1], np.tril(np.ones((TGT.shape[1],) * 2, bool))[None, None],
        (None, True), ALL_ROWS),
    "cross-attention over a padded source": (
        TGT.shape[1], SRC.shape[1], SRC_MASK[:, None, None, :], (key_lengths(SRC_MASK), False),
        REAL_ROWS),
    # One query over a cache of STEP_LEN whose entries after the position hold values too.
    "cached decoding step": (
        1, STEP_LEN, (np.arange(STEP_LEN) <= STEP_POSITION)[None, None, None, :],
        (jnp.full(len(SRC), STEP_POSITION + 1, jnp.int32), False), ALL_ROWS),
}


@pytest.mark.parametrize("case", CASES)
def test_lengths_and_causal_flag_equal_todays_masks_and_numpy(case):
    q_len, kv_len, mask, (kv_lengths, causal), rows = CASES[case]
    q, k, v = _qkv(q_len, kv_len)
    implementation = attention_implementation("auto", jnp.float32, HEAD_DIM, q_len)
    assert implementation == "xla"  # on CPU
    cotangent = np.random.default_rng(1).normal(size=q.shape) * rows[:, None, None, None]
    cotangent = jnp.asarray(cotangent, jnp.float32)

    def new(q, k, v):
        return attend(q, k, v, kv_lengths, causal, implementation)

    def today(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, mask=jnp.asarray(mask))

    @jax.jit
    def outputs_and_grads(q, k, v):
        grads = [jax.grad(lambda *a, f=f: (f(*a) * cotangent).sum(), argnums=(0, 1, 2))(q, k, v)
                 for f in (new, today)]
        return new(q, k, v), today(q, k, v), grads

    got, expected, (new_grads, today_grads) = jax.device_get(outputs_and_grads(q, k, v))
    np.testing.assert_allclose(got[rows], expected[rows], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[rows], _numpy_attention(q, k, v, mask)[rows],
                               rtol=1e-5, atol=1e-5)
    assert np.isfinite(got).all()
    for got_grad, expected_grad in zip(new_grads, today_grads, strict=True):
        np.testing.assert_allclose(got_grad, expected_grad, rtol=1e-6, atol=1e-6)
        assert np.abs(np.asarray(expected_grad)).max() > 1e-3


def test_the_comparison_sees_a_length_off_by_one():
    """One key too few at the cached step (or the whole cache) changes the output."""
    q_len, kv_len, mask, (kv_lengths, _), _ = CASES["cached decoding step"]
    q, k, v = _qkv(q_len, kv_len)
    expected = np.asarray(jax.nn.dot_product_attention(q, k, v, mask=jnp.asarray(mask)))
    for wrong in (kv_lengths - 1, None):
        got = np.asarray(attend(q, k, v, wrong))
        assert np.abs(got - expected).max() > 1e-2


def test_bfloat16_lengths_equal_todays_masks():
    q_len, kv_len, mask, (kv_lengths, _), _ = CASES["cross-attention over a padded source"]
    q, k, v = _qkv(q_len, kv_len, dtype=jnp.bfloat16)
    got = np.asarray(attend(q, k, v, kv_lengths).astype(jnp.float32))
    expected = np.asarray(jax.nn.dot_product_attention(q, k, v, mask=jnp.asarray(mask))
                          .astype(jnp.float32))
    np.testing.assert_array_equal(got[REAL_ROWS], expected[REAL_ROWS])


def test_key_lengths_count_real_tokens_with_at_least_one():
    assert key_lengths(jnp.asarray(SRC_MASK)).tolist() == [5, 2, 7, 1]
    assert key_lengths(jnp.asarray(SRC_MASK)).dtype == jnp.int32


@pytest.mark.parametrize("choice, dtype, head_dim, q_len, on_cuda, expected", [
    ("auto", jnp.bfloat16, 64, 24, True, "cudnn"),
    ("auto", jnp.float16, 128, 24, True, "cudnn"),
    ("auto", jnp.bfloat16, 64, 24, False, "xla"),     # CPU, TPU or ROCm
    ("auto", jnp.float32, 64, 24, True, "xla"),       # cuDNN's fused attention is 16-bit
    ("auto", jnp.bfloat16, 12, 24, True, "xla"),      # head size not a multiple of 8
    ("auto", jnp.bfloat16, 256, 24, True, "xla"),     # above 128: Hopper only
    ("auto", jnp.bfloat16, 64, 1, True, "xla"),       # one cached decoding step
    ("cudnn", jnp.bfloat16, 64, 1, True, "xla"),
    ("xla", jnp.bfloat16, 64, 24, True, "xla"),
    ("cudnn", jnp.bfloat16, 64, 24, False, "cudnn"),  # forced: jax raises where it cannot run
])
def test_attention_implementation(choice, dtype, head_dim, q_len, on_cuda, expected):
    assert attention_implementation(choice, dtype, head_dim, q_len, on_cuda) == expected


def test_auto_is_xla_on_this_backend():
    assert jax.default_backend() == "cpu"
    assert attention_implementation("auto", jnp.bfloat16, 64, 24) == "xla"


def test_unknown_attention_is_refused():
    with pytest.raises(ValueError, match="model.attention"):
        transformer_layers.TransformerConfig(8, 8, attention="flash")


def test_forced_cudnn_reaches_the_fused_kernel_except_for_a_decoding_step():
    """With model.attention='cudnn' the model's attention calls jax's cuDNN implementation
    (which, on CPU, stops for want of cuDNN); a decoding step (one query) stays on XLA."""
    overrides = {**TINY_TRANSFORMER, "model.dtype": "bfloat16", "max_src_len": SRC.shape[1],
                 "max_tgt_len": TGT.shape[1]}
    xla = build_model(tiny_config(**overrides, **{"model.attention": "xla"}), 12, 12)
    cudnn = build_model(tiny_config(**overrides, **{"model.attention": "cudnn"}), 12, 12)
    variables = jax.eval_shape(xla.init, jax.random.PRNGKey(0), SRC, TGT)
    encoded = jax.eval_shape(xla.encode, variables, SRC)
    for run in (lambda v, e: cudnn.encode(v, SRC),
                lambda v, e: cudnn.forward(v, e, decoder_inputs(TGT))):
        with pytest.raises(RuntimeError, match="cuDNN"):
            jax.eval_shape(run, variables, encoded)

    def step(model, variables, encoded):
        cache = model.init_cache(variables, encoded, TGT.shape[1])
        return model.step(variables, encoded, cache, TGT[:, 0], 2)

    assert (jax.eval_shape(functools.partial(step, cudnn), variables, encoded)
            == jax.eval_shape(functools.partial(step, xla), variables, encoded))


# --- the whole model against one that builds today's boolean masks from the tokens -----------


def _todays_masks(next_fun, args, kwargs, context):
    """A method interceptor that computes every Attention call as before this change: with a
    boolean mask built from the tokens (sources: not PAD; decoder self-attention: causal)."""
    module = context.module
    if not isinstance(module, transformer_layers.Attention) or context.method_name != "__call__":
        return next_fun(*args, **kwargs)
    x, kv = args[:2]
    if isinstance(module.parent, transformer_layers.DecoderLayer) and module.name == "self_attention":
        mask = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))[None, None]
    else:  # encoder self-attention and cross-attention: over the source
        mask = jnp.asarray(SRC != PAD)[:, None, None, :]
    query = module.query(x)
    return module.out(jax.nn.dot_product_attention(query, kv["key"], kv["value"], mask=mask))


def test_transformer_logits_and_gradients_equal_todays_masks():
    config = tiny_config(**TINY_TRANSFORMER, **{"model.norm": "layer",
                                                "max_src_len": SRC.shape[1],
                                                "max_tgt_len": TGT.shape[1]})
    model = build_model(config, 12, 12)
    weights = jnp.asarray((TGT != PAD) & REAL_ROWS[:, None], jnp.float32)

    def loss(params, variables):
        variables = {**variables, "params": params}
        logits = model.forward(variables, model.encode(variables, SRC), decoder_inputs(TGT))
        log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), TGT[..., None], -1)[..., 0]
        return -(log_p * weights).sum(), logits

    @jax.jit
    def compare(rng):
        """One compile: this model, the same with today's masks, and with a leaky mask."""
        variables = model.init(rng, SRC, TGT)
        grad_fn = jax.value_and_grad(loss, has_aux=True)
        new = grad_fn(variables["params"], variables)
        with nn.intercept_methods(_todays_masks):
            old = grad_fn(variables["params"], variables)
        with nn.intercept_methods(_leaky):
            _, leaky_logits = loss(variables["params"], variables)
        return new, old, leaky_logits

    ((new_loss, new_logits), new_grads), ((old_loss, old_logits), old_grads), leaky = (
        jax.device_get(compare(jax.random.PRNGKey(0))))
    np.testing.assert_allclose(new_logits[REAL_ROWS], old_logits[REAL_ROWS], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_loss, old_loss, rtol=1e-6)
    flat_new, flat_old = jax.tree.leaves(new_grads), jax.tree.leaves(old_grads)
    assert len(flat_new) == len(flat_old) > 0
    for got, expected in zip(flat_new, flat_old, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    # The interceptor really runs: a mask without the source padding changes the logits.
    assert np.abs(leaky - old_logits)[REAL_ROWS].max() > 1e-3


def _leaky(next_fun, args, kwargs, context):
    """Like `_todays_masks`, but attends to source padding too."""
    module = context.module
    if not isinstance(module, transformer_layers.Attention) or context.method_name != "__call__":
        return next_fun(*args, **kwargs)
    x, kv = args[:2]
    causal = isinstance(module.parent, transformer_layers.DecoderLayer) and module.name == "self_attention"
    query = module.query(x)
    return module.out(jax.nn.dot_product_attention(query, kv["key"], kv["value"], is_causal=causal))
