"""The run report, TensorBoard scalars, and attention weights for heatmaps."""

import glob
import json
import os
import shutil
import struct

import jax
import matplotlib.image
import matplotlib.pyplot
import numpy as np
import pytest
import sentencepiece as spm
from conftest import ROLLED, tiny_config
from tensorboardX.proto import event_pb2

from flax_s2s import diagnostics, evaluate, report, training
from flax_s2s.cli import evaluate as cli_evaluate
from flax_s2s.data.registry import read_task_texts
from flax_s2s.models import build_model, decoder_inputs
from flax_s2s.outputs import OutputError
from flax_s2s.report import attention_weights, layer_order
from flax_s2s.workdirs import load_workdir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, addition_data_dir):
    workdir = tmp_path_factory.mktemp("runs") / "tiny"
    training.run(tiny_config(data_dir=addition_data_dir, **ROLLED), str(workdir))
    return str(workdir)


def _read_scalar_tags(event_dir):
    """Tags in TensorBoard event files, read with the event protobuf (TFRecord framing)."""
    tags = set()
    for path in glob.glob(os.path.join(event_dir, "events.out.tfevents.*")):
        data, offset = open(path, "rb").read(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            tags.update(value.tag for value in event.summary.value)
            offset += 12 + length + 4
    return tags


def test_tensorboard_holds_the_scalars(workdir):
    tags = _read_scalar_tags(os.path.join(workdir, "tensorboard"))
    assert {"train/loss", "train/token_accuracy", "validation/loss", "validation/exact_match",
            "test/exact_match", "test/fr_token_accuracy"} <= tags


EXPECTED_PIXELS = {"curves.png": (400, 1500), "schedule.png": (400, 600),
                   "attention.png": (400, 1600)}


def test_report_writes_non_blank_pngs_of_the_expected_size_and_links_them(workdir, tmp_path):
    path = report.write_report([workdir], str(tmp_path))
    text = open(path).read()
    for name, (height, width) in EXPECTED_PIXELS.items():
        image = matplotlib.image.imread(tmp_path / name)
        assert image.shape[:2] == (height, width), name
        assert image[..., :3].var() > 0, f"{name} is blank"
        assert f"]({name})" in text
    assert "| tiny | test | 20 |" in text


def test_compare_overlays_runs(workdir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(workdir, other)
    with open(other / "metrics.jsonl", "a") as f:  # a run that reports text metrics
        f.write(json.dumps({"step": 30, "split": "validation", "loss": 0.5, "wer": 12.5, "per": 3.25}))
    path = report.write_report([workdir, str(other)], str(tmp_path / "cmp"), attention=False)
    text = open(path).read()
    assert "| tiny | test |" in text and "| other | test |" in text
    assert "| exact_match | wer | per |" in text
    assert "| other | validation | 30 | 0.5000 |  |  |  | 12.5000 | 3.2500 |" in text
    assert matplotlib.image.imread(tmp_path / "cmp" / "curves.png").var() > 0


def _nan(values):
    return [np.nan if v is None else v for v in values]


def test_evaluate_records_the_diagnostics_and_the_report_draws_them(workdir, tmp_path):
    run = tmp_path / "tiny"
    shutil.copytree(workdir, run)
    result = evaluate.evaluate_lexicon(str(run), None, split="validation",
                                       diagnose=diagnostics.DIAGNOSES, max_distance=4)
    record = result["diagnostics"]
    trained = load_workdir(str(run))
    pairs = read_task_texts(trained.config, trained.config.data_dir, ("validation",))["validation"]
    lengths = np.array([len(trained.tgt_vocab.encode(target)) for _, target in pairs])  # EOS too
    for curve in record["recovery"].values():  # every k before the EOS, counted at k + d
        assert curve["distance"] == [1, 2, 3, 4]
        assert curve["tokens"] == [np.maximum(lengths - d, 0).sum() for d in (1, 2, 3, 4)]
    rates = record["error_after_error"]
    assert rates["positions_after_clean"] + rates["positions_after_error"] == sum(
        len(target) for target in dict(pairs).values())  # the references' characters
    # every wrong output has one first error, after none
    assert rates["errors_after_clean"] == round((1 - result["exact_match"]) * result["words"])

    out = run / diagnostics.RECORD_FILE
    cli_evaluate.write_record(str(out), record, overwrite=False)
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        cli_evaluate.write_record(str(out), record, overwrite=False)
    path = report.write_report([str(run)], str(tmp_path / "report"), attention=False)
    text = open(path).read()
    for name in ("recovery.png", "error_after_error.png"):
        assert f"]({name})" in text and matplotlib.image.imread(tmp_path / "report" / name).var() > 0
    figure = report.recovery_figure({"tiny": report.load_diagnostics(str(run))})
    *lines, recovered = figure.axes[0].get_lines()  # a line per corruption, and y = 1
    np.testing.assert_array_equal(recovered.get_ydata(), [1, 1])
    for line, curve in zip(lines, record["recovery"].values(), strict=True):
        np.testing.assert_array_equal(line.get_xdata(), curve["distance"])
        np.testing.assert_array_equal(line.get_ydata(), _nan(curve["relative"]))
    bars, by_distance = report.error_after_error_figure({"tiny": record}).axes
    assert [patch.get_height() for patch in bars.patches] == _nan(
        [rates["rate_after_clean"], rates["rate_after_error"]])
    np.testing.assert_array_equal(by_distance.get_lines()[0].get_ydata(),
                                  _nan(rates["by_distance"]["rate"]))
    matplotlib.pyplot.close("all")

    out.write_text("{}")  # not a record: neither replaced nor drawn
    with pytest.raises(OutputError, match="does not write"):
        cli_evaluate.write_record(str(out), record, overwrite=True)
    with pytest.raises(ValueError, match="diagnostics.json: its \"kind\" is None"):
        report.write_report([str(run)], str(tmp_path / "again"), attention=False)


@pytest.mark.parametrize("model_type", ["lstm", "transformer"])
def test_attention_weights_sum_to_one_over_source_and_ignore_padding(model_type):
    config = tiny_config(**{"model.type": model_type})
    model = build_model(config, 12, 12)
    src = np.array([[4, 5, 6, 7, 0, 0], [8, 9, 0, 0, 0, 0]], np.int32)
    tgt = np.array([[4, 5, 2, 0], [6, 7, 8, 2]], np.int32)
    variables = model.init(jax.random.PRNGKey(0), src, tgt)
    layers = attention_weights(model, variables, src, decoder_inputs(tgt))
    assert len(layers) == (1 if model_type == "lstm" else config.model.num_decoder_layers)
    weights = np.asarray(layers[-1])
    assert weights.shape == (2, 4, 6)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    assert np.all(weights[0, :, 4:] == 0) and np.all(weights[1, :, 2:] == 0)
    # Extra padding columns change nothing.
    wider = np.pad(src, ((0, 0), (0, 3)))
    padded = attention_weights(model, variables, wider, decoder_inputs(tgt))[-1]
    np.testing.assert_allclose(np.asarray(padded)[..., :6], weights, atol=1e-5)


def test_by_position_figure_shows_the_gold_rate_beside_it_for_scheduled_sampling(workdir, tmp_path):
    report.write_report([workdir], str(tmp_path / "tf"), attention=False)
    assert matplotlib.image.imread(tmp_path / "tf" / "by_position.png").shape[:2] == (400, 600)
    scheduled = tmp_path / "ss"
    shutil.copytree(workdir, scheduled)
    with open(scheduled / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 20, "split": "train", "loss": 0.5,
                            "gold_rate_by_position": [1.0, 0.8, 0.6, None, None, None]}) + "\n")
    report.write_report([str(scheduled)], str(tmp_path / "ss_report"), attention=False)
    image = matplotlib.image.imread(tmp_path / "ss_report" / "by_position.png")
    assert image.shape[:2] == (400, 1200)
    assert image[:, 600:, :3].var() > 0, "the gold-rate panel is drawn"


@pytest.fixture(scope="module")
def sentencepiece_workdir(tmp_path_factory, addition_data_dir):
    """A two-step run whose vocabularies are SentencePiece models."""
    workdir = tmp_path_factory.mktemp("runs") / "sp"
    config = tiny_config(data_dir=addition_data_dir, **ROLLED, **{
        "vocab.type": "sentencepiece", "vocab.sp_vocab_size": 20, "num_train_steps": 2,
        "log_every": 1, "eval_every": 2, "checkpoint_every": 2})
    training.run(config, str(workdir))
    return str(workdir), config


def test_attention_of_a_sentencepiece_run_is_labelled_with_its_pieces(sentencepiece_workdir,
                                                                       tmp_path):
    workdir, config = sentencepiece_workdir
    report.write_report([workdir], str(tmp_path))
    assert matplotlib.image.imread(tmp_path / "attention.png").var() > 0
    sources, predictions, _ = report.attention_examples(workdir, 3)
    src_pieces = spm.SentencePieceProcessor(model_file=os.path.join(workdir, "src_vocab.model"))
    tgt_pieces = spm.SentencePieceProcessor(model_file=os.path.join(workdir, "tgt_vocab.model"))
    texts = read_task_texts(config, config.data_dir, ("validation",))["validation"][:3]
    for labels, (text, _) in zip(sources, texts, strict=True):
        assert labels == [src_pieces.id_to_piece(i) for i in src_pieces.encode(text)]
    for labels in predictions:
        assert labels and all(tgt_pieces.id_to_piece(tgt_pieces.piece_to_id(p)) == p
                              for p in labels)


def test_attention_layers_come_in_layer_order_past_ten_layers():
    """Layer 2's cross-attention query is zeroed, so it alone attends uniformly; it must be the
    third of the 11 layers returned (a name sort would put decoder_layers_10 there)."""
    config = tiny_config(**{"model.type": "transformer", "model.d_model": 8, "model.num_heads": 1,
                            "model.mlp_dim": 8, "model.num_encoder_layers": 1,
                            "model.num_decoder_layers": 11})
    model = build_model(config, 12, 12)
    src = np.array([[4, 5, 6, 7, 0]], np.int32)
    tgt = np.array([[4, 5, 2]], np.int32)
    variables = model.init(jax.random.PRNGKey(0), src, tgt)
    query = variables["params"]["decoder_layers_2"]["cross_attention"]["query"]
    query.update(jax.tree.map(np.zeros_like, query))
    layers = attention_weights(model, variables, src, decoder_inputs(tgt))
    uniform = [bool(np.allclose(np.asarray(w)[0, :, :4], 0.25, atol=1e-6)) for w in layers]
    assert uniform == [layer == 2 for layer in range(11)]


def test_layer_order_sorts_numbered_layers_by_number():
    paths = [("decoder_layers_10", "cross_attention", "attention_weights"),
             ("decoder_layers_2", "cross_attention", "attention_weights"),
             ("decoder_layers_1", "cross_attention", "attention_weights"),
             ("attention_weights",)]
    ordered = sorted(paths, key=layer_order)
    assert [path[0] for path in ordered] == [
        "attention_weights", "decoder_layers_1", "decoder_layers_2", "decoder_layers_10"]


def test_by_position_axes_tick_whole_positions_only():
    """Three positions: left to itself matplotlib ticks 0, 0.25, 0.5, ..."""
    records = [
        {"step": 10, "split": "train", "loss": 1.0, "gold_rate_by_position": [1.0, 0.5, 0.25]},
        {"step": 10, "split": "validation", "loss": 1.0, "tf_accuracy_by_position": [0.9, 0.8, 0.7],
         "fr_accuracy_by_position": [0.9, 0.6, 0.3]},
    ]
    fig = report.by_position_figure({"run": records})
    axes = fig.get_axes()
    assert len(axes) == 2
    for ax in axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
    matplotlib.pyplot.close(fig)
