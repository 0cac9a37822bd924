"""Special tokens other than the default ids (T5-like, BART-like) work end to end.

The reference is a permutation: a model over default ids (pad 0, bos 1, eos 2, unk 3) whose
embedding rows and output columns are moved to other ids is the same function as the original,
so what it decodes, the logits it trains on and its losses must be the original's, mapped
through the permutation. A piece of code that still used a default id would break the equality.
"""

import io
import json

import flax
import jax
import ml_collections
import numpy as np
import pytest
import sentencepiece as spm

from configs import default
from flax_s2s import decoding, forcing, metrics, training
from flax_s2s.data import pipeline
from flax_s2s.data.vocab import SentencePieceVocab, SymbolVocab, load_vocab, model_special_tokens
from flax_s2s.ensemble import Ensemble
from flax_s2s.models import build_model, decoder_inputs
from flax_s2s.special_tokens import DEFAULT_SPECIAL_TOKENS, SpecialTokens

T5 = SpecialTokens(pad=0, bos=0, eos=1, unk=2)  # decoding starts from pad
BART = SpecialTokens(pad=1, bos=0, eos=2, unk=3)
SPECIALS = {"t5": T5, "bart": BART}

VOCAB, MAX_LEN, BEAM = 9, 6, 3  # default ids: 4 specials, 5 ordinary tokens
SRC = np.array([[4, 5, 6, 0], [7, 8, 0, 0], [4, 4, 4, 4], [8, 7, 6, 5], [5, 0, 0, 0]], np.int32)
TGT = np.array([[4, 5, 2, 0, 0, 0], [6, 2, 0, 0, 0, 0], [7, 8, 4, 5, 6, 2],
                [8, 2, 0, 0, 0, 0], [5, 5, 5, 2, 0, 0]], np.int32)
TINY_SIZES = {"emb_dim": 8, "hidden_dim": 16, "attention_dim": 8,  # LSTM
              "d_model": 16, "num_heads": 2, "mlp_dim": 32, "num_encoder_layers": 1,
              "num_decoder_layers": 1}  # Transformer


# --- the value itself ---


def test_special_tokens_refuse_ambiguous_ids_but_let_bos_share_pad_or_eos():
    assert T5.never_emitted == (0,) and BART.never_emitted == (1, 0)
    # BART's decoder starts from eos: eos must stay emittable, or no output would end
    assert SpecialTokens(pad=1, bos=2, eos=2, unk=3).never_emitted == (1,)
    with pytest.raises(ValueError, match="must differ"):
        SpecialTokens(pad=0, bos=1, eos=0, unk=3)
    with pytest.raises(ValueError, match="bos may share"):
        SpecialTokens(pad=0, bos=3, eos=2, unk=3)
    with pytest.raises(ValueError, match="int >= 0"):
        SpecialTokens(pad=-1)
    # T5 reads pad as its start token: position 0 is real, later pads are padding.
    inputs = np.array([[0, 5, 1, 0], [0, 1, 0, 0]])
    real = T5.real_decoder_inputs(inputs, np.arange(4))
    np.testing.assert_array_equal(real, [[True, True, True, False], [True, True, False, False]])
    np.testing.assert_array_equal(T5.real_decoder_inputs(inputs[:, 0], 0), [True, True])
    np.testing.assert_array_equal(T5.real_decoder_inputs(inputs[:, 3], 3), [False, False])
    config = _config("transformer")
    with pytest.raises(ValueError, match="do not fit"):
        build_model(config, 12, 3, SpecialTokens(pad=0, bos=1, eos=2, unk=3))


# --- vocabularies provide them ---

WORDS = ["house", "mouse", "horse", "small", "tall", "ball", "green", "the", "a", "is"]
CORPUS = [f"the {a} is {b}" for a in WORDS for b in WORDS]


@pytest.fixture(scope="module", params=sorted(SPECIALS))
def sentencepiece(request):
    specials = SPECIALS[request.param]
    return specials, SentencePieceVocab.train(CORPUS, vocab_size=40, special_tokens=specials)


def test_sentencepiece_vocab_reads_its_models_special_ids(sentencepiece, tmp_path):
    specials, vocab = sentencepiece
    assert vocab.special_tokens == specials
    text = "the green mouse is small"
    ids = vocab.encode(text)
    assert ids[-1] == specials.eos
    assert not set(ids[:-1]) & {specials.pad, specials.bos, specials.eos, specials.unk}
    assert vocab.decode([specials.bos, *ids, specials.pad, ids[0]]) == text  # stops at eos
    vocab.save(tmp_path / "tgt_vocab.model")
    assert SentencePieceVocab.load(tmp_path / "tgt_vocab.model").special_tokens == specials


def test_tokenize_pads_with_each_vocabularys_pad(sentencepiece):
    specials, vocab = sentencepiece
    pairs = [("the ball", "the green ball is tall"), ("a", "a house")]
    examples = pipeline.tokenize(pairs, vocab, vocab, max_src_len=12, max_tgt_len=12)
    for tokens, texts in ((examples.src, [s for s, _ in pairs]), (examples.tgt, [t for _, t in pairs])):
        for row, text in zip(tokens, texts, strict=True):
            n = len(vocab.encode(text, add_eos=tokens is examples.tgt))
            assert (row[n:] == specials.pad).all() and (row[:n] != specials.pad).all()
    batches = list(pipeline.eval_batches(examples, batch_size=3))
    assert (batches[0]["src_tokens"][2] == specials.pad).all()
    assert (batches[0]["tgt_tokens"][2] == specials.pad).all() and batches[0]["weights"][2] == 0
    (long_src, long_tgt), (short_src, short_tgt) = pairs
    boundary = max(len(vocab.encode(short_src, False)), len(vocab.encode(short_tgt)))
    assert len(vocab.encode(long_tgt)) > boundary
    shapes = pipeline.bucket_shapes(12, 12, [boundary])
    assert pipeline.assign_buckets(examples, shapes).tolist() == [1, 0]


def test_a_sentencepiece_model_without_a_pad_piece_is_refused():
    proto = _raw_sentencepiece(pad_id=-1, unk_id=0, bos_id=1, eos_id=2)
    with pytest.raises(ValueError, match="no pad piece"):
        SentencePieceVocab(proto)


def _raw_sentencepiece(**ids) -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=model,
                                   vocab_size=30, hard_vocab_limit=False, minloglevel=2, **ids)
    return model.getvalue()


def test_source_and_target_must_pad_alike(sentencepiece):
    specials, vocab = sentencepiece
    symbols = SymbolVocab.build(["abc"])
    assert model_special_tokens(vocab, vocab) == specials
    if specials.pad != symbols.special_tokens.pad:
        with pytest.raises(ValueError, match="one pad id"):
            model_special_tokens(symbols, vocab)
    else:
        assert model_special_tokens(symbols, vocab) == specials


def test_an_old_workdirs_config_and_vocabulary_build_todays_default_model(tmp_path):
    """A saved config has no special-token key (they come from the vocabulary), and a symbol
    vocabulary saved before the vocabularies had special tokens loads with the default ids."""
    (tmp_path / "tgt_vocab.json").write_text(json.dumps({"symbols": list("abcde"), "separator": ""}))
    old_vocab = load_vocab(tmp_path / "tgt_vocab")
    assert old_vocab.special_tokens == DEFAULT_SPECIAL_TOKENS
    saved = ml_collections.ConfigDict(default.get_config().to_dict())  # as a checkpoint stores it
    assert not any("special" in key for key in saved.model.keys())
    for model_type in ("lstm", "transformer"):
        saved.model.type = model_type
        rebuilt = build_model(saved, len(old_vocab), len(old_vocab),
                              model_special_tokens(old_vocab, old_vocab))
        assert rebuilt == build_model(saved, len(old_vocab), len(old_vocab))
        assert rebuilt.special_tokens == DEFAULT_SPECIAL_TOKENS


# --- a model with other ids is a permutation of one with the default ids ---


def _config(model_type: str) -> ml_collections.ConfigDict:
    config = default.get_config()
    config.model.type = model_type
    config.model.update({k: v for k, v in TINY_SIZES.items() if k in config.model})
    config.max_src_len, config.max_tgt_len = SRC.shape[1], MAX_LEN
    return config


def _id_map(specials: SpecialTokens, seed: int = 0) -> tuple[np.ndarray, int]:
    """(the new id of each default id [VOCAB], the new vocabulary size): each special goes to its
    id in `specials`, the ordinary tokens to the remaining ids in a shuffled order."""
    mapping = np.empty(VOCAB, np.int64)
    for name in ("pad", "bos", "eos", "unk"):
        mapping[getattr(DEFAULT_SPECIAL_TOKENS, name)] = getattr(specials, name)
    taken = {specials.pad, specials.bos, specials.eos, specials.unk}
    size = VOCAB - (4 - len(taken))  # bos == pad frees one id
    free = [i for i in range(size) if i not in taken]
    mapping[4:] = np.random.default_rng(seed).permutation(free)
    return mapping, size


def _move_ids(params, mapping: np.ndarray, size: int):
    """The parameters with every vocabulary-indexed row (embeddings) or column (output layer)
    moved to its new id. Where pad and bos land on one id (bos == pad), bos's row is kept."""
    pad, bos = DEFAULT_SPECIAL_TOKENS.pad, DEFAULT_SPECIAL_TOKENS.bos
    kept = [i for i in range(VOCAB) if not (i == pad and mapping[pad] == mapping[bos])]

    def move(path, leaf):
        leaf = np.asarray(leaf)
        if "src_embed" in path or "tgt_embed" in path:  # [vocab, features]
            moved = np.zeros((size, *leaf.shape[1:]), leaf.dtype)
            moved[mapping[kept]] = leaf[kept]
            return moved
        if "output_proj" in path:  # kernel [features, vocab], bias [vocab]
            moved = np.zeros((*leaf.shape[:-1], size), leaf.dtype)
            moved[..., mapping[kept]] = leaf[..., kept]
            return moved
        return leaf

    flat = flax.traverse_util.flatten_dict(params)
    return flax.traverse_util.unflatten_dict({path: move(path, leaf) for path, leaf in flat.items()})


# (init seed, scale of every weight, of the output kernel, added to eos's output bias) that make
# rows end at different steps (checked below).
SHARPENING = {"lstm": (3, 3.0, 1.0, 0.0), "transformer": (0, 1.0, 2.0, 2.0)}


@pytest.fixture(scope="module", params=["lstm", "transformer"])
def default_model(request):
    """A tiny model over default ids, sharpened so that rows end at different steps. So that a
    model where bos == pad can be the same function, pad's embedding is bos's and pad's output
    logit is -1e9 (probability 0: the softmax over one id fewer is the same)."""
    model = build_model(_config(request.param), VOCAB, VOCAB)
    seed, scale, output_scale, eos_bias = SHARPENING[request.param]
    variables = jax.jit(model.init)(jax.random.PRNGKey(seed), SRC, TGT)
    params = jax.tree.map(lambda w: np.array(scale * w), variables["params"])
    pad, bos, eos = (DEFAULT_SPECIAL_TOKENS.pad, DEFAULT_SPECIAL_TOKENS.bos,
                     DEFAULT_SPECIAL_TOKENS.eos)
    params["output_proj"]["kernel"] *= output_scale
    params["output_proj"]["bias"][eos] += eos_bias
    for table in ("src_embed", "tgt_embed"):
        params[table]["embedding"][pad] = params[table]["embedding"][bos]
    params["output_proj"]["kernel"][:, pad] = 0.0
    params["output_proj"]["bias"][pad] = -1e9
    return request.param, model, {"params": params}


@pytest.fixture(scope="module", params=sorted(SPECIALS))
def moved_model(request, default_model):
    """(specials, id map, model over those ids, its variables) equal to `default_model`."""
    model_type, _, variables = default_model
    specials = SPECIALS[request.param]
    mapping, size = _id_map(specials)
    model = build_model(_config(model_type), size, size, specials)
    moved = {"params": _move_ids(variables["params"], mapping, size)}
    expected = jax.eval_shape(model.init, jax.random.PRNGKey(0), SRC, TGT)
    assert jax.tree.map(np.shape, expected) == jax.tree.map(np.shape, moved), "a vocab-sized leaf moved"
    return specials, mapping, model, moved


def test_the_moved_model_carries_its_special_tokens(moved_model):
    specials, _, model, _ = moved_model
    assert model.special_tokens == specials


def test_greedy_decodes_as_the_default_model_through_the_id_map(default_model, moved_model):
    _, model, variables = default_model
    specials, mapping, moved, moved_variables = moved_model
    tokens, lengths, scores = jax.device_get(decoding.greedy(model, variables, SRC, MAX_LEN))
    assert len(set(lengths.tolist())) >= 2 and lengths.min() < MAX_LEN, "rows should end apart"
    got, got_lengths, got_scores = jax.device_get(
        decoding.greedy(moved, moved_variables, mapping[SRC], MAX_LEN))
    np.testing.assert_array_equal(got, mapping[tokens])
    np.testing.assert_array_equal(got_lengths, lengths)
    np.testing.assert_allclose(got_scores, scores, rtol=1e-5, atol=1e-5)
    _check_conventions(got, got_lengths, specials)


def test_beam_search_decodes_as_the_default_model_through_the_id_map(default_model, moved_model):
    _, model, variables = default_model
    specials, mapping, moved, moved_variables = moved_model
    tokens, lengths, scores = jax.device_get(
        decoding.beam_search(model, variables, SRC, beam_size=BEAM, max_len=MAX_LEN, alpha=0.6))
    got, got_lengths, got_scores = jax.device_get(decoding.beam_search(
        moved, moved_variables, mapping[SRC], beam_size=BEAM, max_len=MAX_LEN, alpha=0.6))
    np.testing.assert_array_equal(got, mapping[tokens])
    np.testing.assert_array_equal(got_lengths, lengths)
    np.testing.assert_allclose(got_scores, scores, rtol=1e-5, atol=1e-5)
    _check_conventions(got.reshape(-1, MAX_LEN), got_lengths.reshape(-1), specials)


def _check_conventions(tokens: np.ndarray, lengths: np.ndarray, specials: SpecialTokens) -> None:
    """Rows end at their first eos, are pad after it, and never hold pad or bos before it."""
    for row, length in zip(tokens, lengths, strict=True):
        emitted = row[:length].tolist()
        assert not set(emitted) & set(specials.never_emitted)
        assert specials.eos not in emitted[:-1]
        assert (row[length:] == specials.pad).all()
        if length < MAX_LEN:
            assert emitted[-1] == specials.eos


def test_decoder_inputs_start_with_the_models_bos(moved_model):
    specials, mapping, _, _ = moved_model
    inputs = decoder_inputs(mapping[TGT], specials.bos)
    assert (inputs[:, 0] == specials.bos).all()
    np.testing.assert_array_equal(inputs, mapping[np.asarray(decoder_inputs(TGT))])


@pytest.mark.parametrize("mode", forcing.MODES)
def test_scheduled_sampling_reads_and_scores_as_the_default_model(default_model, moved_model, mode):
    """Half the positions read the model's own token: its choice must skip the model's pad and
    bos (and only those: eos is made likely, so a mask of other ids changes what is read), and
    the gold inputs must start from its bos."""
    _, model, variables = default_model
    specials, mapping, moved, moved_variables = moved_model
    variables = _boost(variables, DEFAULT_SPECIAL_TOKENS.eos)
    moved_variables = _boost(moved_variables, specials.eos)
    tf_config = default.get_config().teacher_forcing
    tf_config.update(schedule="constant", p=0.5, mode=mode)
    teacher_forcing = forcing.TeacherForcing.from_config(tf_config)

    def log_probs(model, variables, src, tgt):
        encoded = model.encode(variables, src)
        logits, mask = teacher_forcing.train_logits(
            model, variables, encoded, tgt, step=0, step_rng=jax.random.PRNGKey(5), dropout_rng=None)
        return np.asarray(decoding.output_log_probs(logits, model.special_tokens)), np.asarray(mask)

    expected, mask = log_probs(model, variables, SRC, TGT)
    got, got_mask = log_probs(moved, moved_variables, mapping[SRC], mapping[TGT])
    assert 0 < mask[:, 1:].mean() < 1
    np.testing.assert_array_equal(got_mask, mask)
    np.testing.assert_allclose(got[..., mapping], expected, rtol=1e-5, atol=1e-5)


def _boost(variables, token: int, amount: float = 3.0):
    """The variables with `amount` added to `token`'s output bias."""
    params = jax.tree.map(np.array, variables["params"])
    params["output_proj"]["bias"][token] += amount
    return {"params": params}


def test_token_weights_ignore_the_models_pad(moved_model):
    specials, mapping, _, _ = moved_model
    weights = np.asarray(metrics.token_weights(mapping[TGT], pad=specials.pad))
    np.testing.assert_array_equal(weights, TGT != DEFAULT_SPECIAL_TOKENS.pad)
    assert weights.sum() == sum(list(row).index(2) + 1 for row in TGT)  # up to eos, per row


def test_eval_step_sums_as_the_default_model(default_model, moved_model):
    _, model, variables = default_model
    specials, mapping, moved, moved_variables = moved_model
    predicted = np.asarray(decoding.greedy(model, variables, SRC, MAX_LEN)[0])
    weights = np.array([1, 1, 1, 1, 0], np.float32)  # the last row pads a batch
    batch = {"src_tokens": SRC, "tgt_tokens": TGT, "weights": weights, "predicted_tokens": predicted}
    moved_batch = {**{k: mapping[v] for k, v in batch.items() if k != "weights"}, "weights": weights}
    expected = jax.device_get(training.make_eval_step(model)(variables, batch))
    got = jax.device_get(training.make_eval_step(moved)(moved_variables, moved_batch))
    assert got["tokens"] == expected["tokens"] == (TGT[:4] != 0).sum()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_a_train_step_has_the_default_models_loss(default_model, moved_model):
    _, model, variables = default_model
    _, mapping, moved, moved_variables = moved_model
    config = _config(default_model[0])
    config.label_smoothing = 0.0  # smoothing spreads mass over every id, a vocabulary-size matter
    tx = training.make_optimizer(config)
    batch = {"src_tokens": SRC, "tgt_tokens": TGT}
    moved_batch = {k: mapping[v] for k, v in batch.items()}

    def loss(model, variables, batch):
        state = training.create_train_state(model, tx, config.seed, batch, variables=variables)
        _, step_metrics = jax.jit(training.make_train_step(model, tx, config))(state, batch)
        return {k: float(v) for k, v in step_metrics.items() if k in ("loss", "token_accuracy")}

    expected = loss(model, {**variables, "batch_stats": {}}, batch)
    got = loss(moved, {**moved_variables, "batch_stats": {}}, moved_batch)
    assert got == pytest.approx(expected, rel=1e-5)


def test_ensemble_members_must_share_special_tokens():
    config = _config("transformer")
    bart, plain = build_model(config, VOCAB, VOCAB, BART), build_model(config, VOCAB, VOCAB)
    assert Ensemble((bart, bart)).special_tokens == BART
    with pytest.raises(ValueError, match="special tokens"):
        Ensemble((plain, bart))
