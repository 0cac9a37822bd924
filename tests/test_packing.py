"""Packed training batches (flax_s2s/data/packing.py) and the Transformer on them: the packer
against a plain first-fit loop, packed logits and losses against the same examples unpacked, no
attention across examples, and the config checks."""

from __future__ import annotations

import collections

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import LETTERS, REVERSE_PAIRS, TINY_TRANSFORMER, tiny_config

from flax_s2s import forcing, training
from flax_s2s.data import order, packing, pipeline
from flax_s2s.data.vocab import SymbolVocab
from flax_s2s.errors import ConfigError
from flax_s2s.models import build_model, decoder_inputs
from flax_s2s.training.config import validate_config

MAX_SRC, MAX_TGT, ROWS = 12, 14, 4  # packed row lengths; open rows of the packer


def reference_rows(examples, num_rows):
    """A plain first-fit packer: each example, in order, into the first of at most `num_rows`
    open rows where its source and target both fit; when none fits, the open rows are emitted
    and it opens the next round. Returns rows as lists of example indices."""
    src_len = (examples.src != examples.src_pad).sum(1)
    tgt_len = (examples.tgt != examples.tgt_pad).sum(1)
    done, open_rows = [], []
    for index in range(len(examples)):
        for row in open_rows:
            if (sum(src_len[row]) + src_len[index] <= MAX_SRC
                    and sum(tgt_len[row]) + tgt_len[index] <= MAX_TGT):
                row.append(index)
                break
        else:
            if len(open_rows) == num_rows:
                done, open_rows = done + open_rows, []
            open_rows.append([index])
    return done + open_rows


def layout(examples, rows):
    """The packed batch that `rows` (example indices per row) stand for, built by hand."""
    batch = {key: np.zeros((len(rows), MAX_SRC if key.startswith("src") else MAX_TGT), np.int32)
             for key in ("src_tokens", "tgt_tokens", *packing.PACKED_KEYS)}
    for r, row in enumerate(rows):
        for side, tokens, pad in (("src", examples.src, examples.src_pad),
                                  ("tgt", examples.tgt, examples.tgt_pad)):
            start = 0
            for segment, index in enumerate(row, start=1):
                real = tokens[index][tokens[index] != pad]
                end = start + len(real)
                batch[f"{side}_tokens"][r, start:end] = real
                batch[f"{side}_segment_ids"][r, start:end] = segment
                batch[f"{side}_positions"][r, start:end] = np.arange(len(real))
                start = end
    return batch


@pytest.fixture(scope="module")
def setup():
    config = tiny_config(**TINY_TRANSFORMER, max_src_len=MAX_SRC, max_tgt_len=MAX_TGT,
                         batch_size=ROWS, pack=True)
    vocab = SymbolVocab.build(LETTERS)
    examples = pipeline.tokenize(REVERSE_PAIRS, vocab, vocab, MAX_SRC, MAX_TGT)
    model = build_model(config, len(vocab), len(vocab))
    unpacked = {"src_tokens": examples.src, "tgt_tokens": examples.tgt}
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), examples.src, examples.tgt)
    rows = reference_rows(examples, ROWS)
    return config, examples, model, variables, unpacked, rows, make_logits(model)


def packed_rows(examples, num_rows):
    """Every row grain's packer makes of the examples in their order (one pass)."""
    in_order = grain.MapDataset.range(len(examples))
    stream = packing.unpadded_examples(examples, in_order).to_iter_dataset()
    rows = list(packing.pack_rows(stream, MAX_SRC, MAX_TGT, num_rows, 0, 0))
    return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def make_logits(model):
    """jit((variables, batch) -> teacher-forced logits), packed or not as the batch is."""

    def logits(variables, batch):
        src_segments, tgt_segments = packing.segments(batch, "src"), packing.segments(batch, "tgt")
        encoded = model.encode(variables, batch["src_tokens"], segments=src_segments)
        segment_ids = None if tgt_segments is None else tgt_segments["segment_ids"]
        inputs = decoder_inputs(batch["tgt_tokens"], model.special_tokens.bos, segment_ids)
        return model.forward(variables, encoded, inputs, segments=tgt_segments)

    return jax.jit(logits)


def token_losses(logits, tokens):
    """-log p(target) per position (numpy, float64)."""
    logits = np.asarray(logits, np.float64)
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    return lse - np.take_along_axis(logits, tokens[..., None], -1)[..., 0]


def where_is(batch, rows):
    """(row, source slice, target slice) of every example in a packed batch laid out by `rows`."""
    found = {}
    for r, row in enumerate(rows):
        for segment, index in enumerate(row, start=1):
            src = np.flatnonzero(batch["src_segment_ids"][r] == segment)
            tgt = np.flatnonzero(batch["tgt_segment_ids"][r] == segment)
            found[index] = (r, slice(src[0], src[-1] + 1), slice(tgt[0], tgt[-1] + 1))
    return found


def test_packer_matches_a_first_fit_loop(setup):
    _, examples, *_, rows, _ = setup
    packed = packed_rows(examples, ROWS)
    expected = layout(examples, rows)
    assert sorted(packed) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(packed[key], expected[key], err_msg=key)
    # every example exactly once, none cut, several a row
    assert sorted(i for row in rows for i in row) == list(range(len(examples)))
    assert len(rows) < len(examples) / 2


def test_endless_batches_keep_the_shuffled_order_and_resume(setup):
    _, examples, *_ = setup
    dataset = pipeline.train_dataset(examples, ROWS, seed=3, pack=True)
    iterator = pipeline.train_iterator(dataset)
    batches = [next(iterator) for _ in range(12)]  # several epochs of 32 examples
    state = iterator.get_state()
    following = next(iterator)
    seen = [(tuple(b["src_tokens"][r][b["src_segment_ids"][r] == s]),
             tuple(b["tgt_tokens"][r][b["tgt_segment_ids"][r] == s]))
            for b in batches for r in range(ROWS) for s in range(1, b["src_segment_ids"][r].max() + 1)]
    epoch_order = order.EpochOrder(len(examples), seed=3)
    stream = epoch_order.indices(0, len(seen)).tolist()
    real = [(tuple(examples.src[i][examples.src[i] != 0]), tuple(examples.tgt[i][examples.tgt[i] != 0]))
            for i in stream]
    assert collections.Counter(seen) == collections.Counter(real)
    assert len(seen) > 2 * len(examples)
    resumed = pipeline.train_iterator(pipeline.train_dataset(examples, ROWS, seed=3, pack=True))
    resumed.set_state(state)
    for key, value in next(resumed).items():
        np.testing.assert_array_equal(value, following[key])
    # two processes each take their half of every global batch's rows
    halves = [next(pipeline.train_iterator(pipeline.train_dataset(
        examples, ROWS, seed=3, process_index=i, process_count=2, pack=True))) for i in (0, 1)]
    for key, value in batches[0].items():
        np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), value)


def test_packed_logits_and_losses_equal_unpacked(setup):
    _, examples, model, variables, unpacked, rows, logits = setup
    assert_packed_equals_unpacked(examples, variables, unpacked, rows, logits)


def test_t5_packed_logits_equal_unpacked(setup):
    config, examples, _, _, unpacked, rows, _ = setup
    config = config.copy_and_resolve_references()
    config.model.type = "t5"
    vocab = SymbolVocab.build(LETTERS)
    model = build_model(config, len(vocab), len(vocab))
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), examples.src, examples.tgt)
    assert_packed_equals_unpacked(examples, variables, unpacked, rows, make_logits(model))


def assert_packed_equals_unpacked(examples, variables, unpacked, rows, logits):
    """Each example's logits and loss in a packed batch are those it has unpacked (1e-5)."""
    packed = layout(examples, rows)
    packed_logits = np.asarray(logits(variables, packed))
    unpacked_logits = np.asarray(logits(variables, unpacked))
    packed_losses = token_losses(packed_logits, packed["tgt_tokens"])
    unpacked_losses = token_losses(unpacked_logits, unpacked["tgt_tokens"])
    for index, (r, _, tgt) in where_is(packed, rows).items():
        length = tgt.stop - tgt.start
        np.testing.assert_allclose(packed_logits[r, tgt], unpacked_logits[index, :length],
                                   atol=1e-5, rtol=1e-5, err_msg=f"example {index}")
        np.testing.assert_allclose(packed_losses[r, tgt].sum(), unpacked_losses[index, :length].sum(),
                                   rtol=1e-5, err_msg=f"example {index}")
    assert np.isfinite(packed_logits).all()  # the padding positions too


def test_no_attention_crosses_a_segment(setup):
    _, examples, model, variables, _, rows, logits = setup
    packed = layout(examples, rows)
    r = max(range(len(rows)), key=lambda i: len(rows[i]))  # the row with the most examples
    base = np.asarray(logits(variables, packed))
    marker = LETTERS.index("h") + 4  # a letter's id (after the 4 special tokens)
    for side in ("src", "tgt"):
        changed = {k: v.copy() for k, v in packed.items()}
        first = changed[f"{side}_segment_ids"][r] == 1
        tokens = changed[f"{side}_tokens"][r]
        # every token of the first example but its last (the target's EOS) becomes the marker
        spots = np.flatnonzero(first)[: -1 if side == "tgt" else None]
        tokens[spots] = np.where(tokens[spots] == marker, marker - 1, marker)
        out = np.asarray(logits(variables, changed))
        segment_ids = changed["tgt_segment_ids"][r]
        own, others_here = segment_ids == 1, segment_ids > 1  # (padding positions count nowhere)
        assert np.abs(out[r, own] - base[r, own]).max() > 1e-3, side  # the marker is seen ...
        np.testing.assert_allclose(out[r, others_here], base[r, others_here], atol=1e-6,
                                   err_msg=side)  # ... by its own example alone
        others = np.arange(len(rows)) != r
        np.testing.assert_array_equal(out[others], base[others])


def test_packed_microbatches_have_the_unpacked_loss(setup):
    config, examples, model, variables, unpacked, rows, logits = setup
    rows = rows + [[]] * (len(rows) % 2)  # an even row count; an empty row is all padding
    packed = layout(examples, rows)
    teacher_forcing = forcing.TeacherForcing.from_config(config.teacher_forcing)
    batch_sums = training.make_batch_sums(model, teacher_forcing, config)

    @jax.jit
    def loss_and_grads(params, batch):
        loss, _, grads = training.accumulated_gradients(
            batch_sums, teacher_forcing, params, {}, batch, jax.random.PRNGKey(1), 0, 2)
        return loss, grads

    loss, grads = loss_and_grads(variables["params"], packed)
    reference = token_losses(logits(variables, unpacked), unpacked["tgt_tokens"])
    weights = unpacked["tgt_tokens"] != examples.tgt_pad
    np.testing.assert_allclose(float(loss), reference[weights].mean(), rtol=1e-5)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_two_pass_reads_own_tokens_shifted_per_example(setup):
    _, examples, model, variables, unpacked, rows, logits = setup
    packed = layout(examples, rows)
    tgt_segments = packing.segments(packed, "tgt")

    @jax.jit
    def read_tokens(variables, batch):
        encoded = model.encode(variables, batch["src_tokens"], segments=packing.segments(batch, "src"))
        gold = decoder_inputs(batch["tgt_tokens"], model.special_tokens.bos, tgt_segments["segment_ids"])
        never_gold = jnp.zeros(gold.shape, bool)
        _, read = forcing.two_pass_unroll(model, variables, encoded, gold, never_gold, None,
                                          segments=tgt_segments)
        return read

    read = np.asarray(read_tokens(variables, packed))
    own = np.asarray(forcing.choose_tokens(logits(variables, unpacked), None, "argmax",
                                           special_tokens=model.special_tokens))
    bos = model.special_tokens.bos
    for index, (r, _, tgt) in where_is(packed, rows).items():
        length = tgt.stop - tgt.start
        expected = np.concatenate([[bos], own[index, : length - 1]])
        np.testing.assert_array_equal(read[r, tgt], expected, err_msg=f"example {index}")


@pytest.mark.parametrize("overrides, named", [
    ({"model.type": "lstm"}, "recurrent state"),
    ({"bucket_boundaries": (4,)}, "config.bucket_boundaries"),
    ({"teacher_forcing.p": 0.5}, "config.teacher_forcing.mode='exact'"),
    ({"teacher_forcing.position_schedule": "exponential", "teacher_forcing.position_k": 0.9},
     "position_schedule='exponential'"),
])
def test_config_refuses_what_does_not_pack(overrides, named):
    config = tiny_config(**{**TINY_TRANSFORMER, "pack": True, **overrides})
    with pytest.raises(ConfigError, match="config.pack=True") as error:
        validate_config(config)
    assert named in str(error.value)


def test_config_accepts_what_packs():
    for overrides in ({}, {"model.type": "bart"}, {"model.type": "t5"},
                      {"teacher_forcing.p": 0.5, "teacher_forcing.mode": "two_pass"}):
        validate_config(tiny_config(**{**TINY_TRANSFORMER, "pack": True, **overrides}))
