"""Fine-tuning from a pretrained directory (`config.pretrained`) with configs/finetune_t5.py and
configs/finetune_bart.py: the run starts from the checkpoint's weights with its tokenizer,
trains, resumes from its own checkpoint, decodes from its workdir, and exports back to the
checkpoint's layout.
(Scheduled sampling on T5 is tested in test_t5.py; BART is the Transformer's code path.)"""

from __future__ import annotations

import importlib
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROLLED
from pretrained_dirs import bart_with_tokenizer, reversal_texts, t5_with_tokenizer, write_parallel_text

from flax_s2s import decoding, infer, pretrained, sharding, training
from flax_s2s.cli import export_pretrained as export_pretrained_cli
from flax_s2s.data.task_data import load_vocabs
from flax_s2s.data.vocab import SentencePieceVocab, TokenizerVocab
from flax_s2s.training.config import ConfigError, validate_config
from flax_s2s.workdirs import load_workdir

pytestmark = pytest.mark.slow
SMALL = {**ROLLED, "bucket_boundaries": (), "batch_size": 8, "eval_batch_size": 8,
         "num_train_steps": 4, "log_every": 1, "eval_every": 4, "checkpoint_every": 2,
         "eval_beam_size": 0, "text_metrics": ("chrf",), "keep_best": 0,
         "optimizer.warmup_steps": 1}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    return {"data": write_parallel_text(root / "data"),
            "t5": t5_with_tokenizer(root / "t5"), "bart": bart_with_tokenizer(root / "bart")}


def _config(kind: str, dirs, **overrides):
    config = importlib.import_module(f"configs.finetune_{kind}").get_config()
    config.pretrained, config.data_path = str(dirs[kind]), str(dirs["data"])
    for key, value in {**SMALL, **overrides}.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def _params(tree):
    return jax.tree.map(np.asarray, tree)


def test_t5_run_starts_from_the_checkpoint_with_its_tokenizer(dirs, tmp_path):
    config = _config("t5", dirs)
    pretrained.configure(config)
    workdir = str(tmp_path / "t5_run")
    setup = training.prepare_run(config, workdir, sharding.make_mesh(config.mesh_shape), ("validation",))
    setup.checkpointer.close()
    model, variables = pretrained.load_pretrained(dirs["t5"], dropout_rate=0.1)
    assert setup.model == model  # the module config.json describes, dropout from it
    jax.tree.map(np.testing.assert_array_equal, _params(setup.state.params), _params(variables["params"]))
    vocabs = load_vocabs(workdir)  # the checkpoint's spiece.model, saved for decode and evaluate
    assert isinstance(vocabs[0], SentencePieceVocab) and vocabs[0] == vocabs[1] == setup.data.src_vocab
    assert config.model.type == "t5" and config.model.dropout_rate == 0.1 and config.vocab.src_eos
    assert json.loads(config.model.pretrained_config)["model_type"] == "t5"
    # sources end in </s>, as T5 reads them
    first = setup.data.splits["train"].src[0]
    assert first[first != 0][-1] == model.special_tokens.eos


def test_bart_fine_tunes_resumes_from_its_checkpoint_decodes_and_exports(dirs, tmp_path):
    straight = str(tmp_path / "straight")
    result = training.run(_config("bart", dirs), straight)
    assert result["step"] == 4 and np.isfinite(result["final"]["test"]["loss"])
    final = load_workdir(straight)
    assert isinstance(final.tgt_vocab, TokenizerVocab)
    # a resume restores the run's own checkpoint, not the pretrained weights again (the exact
    # continuation of a restored state is tested for every run in test_reliability.py)
    config = _config("bart", dirs, num_train_steps=6)
    pretrained.configure(config)
    setup = training.prepare_run(config, straight, sharding.make_mesh(config.mesh_shape), ("validation",))
    setup.checkpointer.close()
    assert int(setup.state.step) == 4
    jax.tree.map(np.testing.assert_array_equal, _params(setup.state.params),
                 _params(final.variables["params"]))
    model, start = pretrained.load_bart(dirs["bart"], dropout_rate=0.1)
    moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(), final.variables, start)
    assert max(jax.tree.leaves(moved)) > 1e-5  # it trained (4 Adam steps of about 3e-5)
    # decoding the workdir (no pretrained directory needed) = greedy decoding of the module
    # that config.json describes, with the workdir's weights, on sources <s> ... </s>
    lines = [source for source, _ in reversal_texts(5, 9)]
    outputs = infer.decode_lines(final, lines, beam_size=0, batch_size=8)
    src = np.full((8, final.config.max_src_len), model.special_tokens.pad, np.int32)
    for row, line in enumerate(lines):
        ids = final.src_vocab.encode(line)
        src[row, : len(ids)] = ids
    assert model == final.model
    tokens, _, _ = decoding.greedy(model, final.variables, jnp.asarray(src), max_len=final.config.max_tgt_len)
    assert outputs == [final.tgt_vocab.decode(row) for row in np.asarray(tokens)[: len(lines)]]
    # export from the workdir alone (the reference layout from its config.pretrained)
    out = tmp_path / "exported"
    export_pretrained_cli.main(["--workdir", straight, "--out", str(out)])
    assert (out / "tokenizer.json").is_file() and (out / "config.json").is_file()
    _, exported = pretrained.load_bart(out)
    jax.tree.map(np.testing.assert_array_equal, _params(exported), _params(final.variables))


def test_pretrained_settings_are_checked_by_name(dirs):
    config = _config("bart", dirs)
    with pytest.raises(ConfigError, match=r"config.model.pretrained_config is empty"):
        validate_config(config)  # configure() not called yet
    pretrained.configure(config)
    validate_config(config)
    config.init_from = "elsewhere"
    with pytest.raises(ConfigError, match=r"config.pretrained=.* and config.init_from='elsewhere'"):
        validate_config(config)
    with pytest.raises(pretrained.PretrainedError, match=r"missing/config\.json: no such file"):
        pretrained.configure(_config("bart", {**dirs, "bart": dirs["data"] / "missing"}))


def test_a_config_json_the_model_cannot_take_fails_at_configure_naming_the_file(dirs, tmp_path):
    """Before any data is read or the tokenizer loaded: configure builds the module the
    config.json describes (its weights are not read)."""
    broken = tmp_path / "t5"
    shutil.copytree(dirs["t5"], broken)
    hf = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**hf, "relative_attention_num_buckets": 2}))
    with pytest.raises(pretrained.PretrainedError,
                       match=r"t5/config\.json: T5 relative_attention_num_buckets must be at least 4"):
        pretrained.configure(_config("t5", {**dirs, "t5": broken}))
