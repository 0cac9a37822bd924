"""Sharding over a device mesh.

In this process (one device): mesh shapes, config checks, and the parameter rule table on abstract
shapes. In subprocesses with 8 CPU devices (the device count is fixed when jax is imported):
training on meshes against one device, parameter and optimizer-state shardings, checkpoints moved
between meshes (tests/sharding_checks.py), and two processes joined by jax.distributed against one.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import FAST_COMPILE, ROLLED_FLAGS, ROOT, tiny_config
from jax.sharding import PartitionSpec as P

from flax_s2s import sharding
from flax_s2s.checkpoint import Checkpointer
from flax_s2s.sharding import resolve_mesh_shape
from flax_s2s.training.config import ConfigError, validate_config

TESTS = os.path.dirname(os.path.abspath(__file__))


# --- mesh shape and config checks ---------------------------------------------------------------

@pytest.mark.parametrize("shape, devices, expected", [
    ((-1, 1), 8, (8, 1)), ((2, -1), 8, (2, 4)), ((-1, 4), 8, (2, 4)), ((1, 1), 1, (1, 1)),
    ((4, 2), 8, (4, 2)),
])
def test_mesh_shape_fills_in_the_remaining_devices(shape, devices, expected):
    assert resolve_mesh_shape(shape, devices) == expected


@pytest.mark.parametrize("overrides, devices, message", [
    ({"mesh_shape": (3, -1)}, 8, "config.mesh_shape=(3, -1): 3 does not divide the 8 devices"),
    ({"mesh_shape": (2, 2)}, 8, "config.mesh_shape=(2, 2): the mesh holds 4 devices, but there are 8"),
    ({"mesh_shape": (-1, -1)}, 8, "config.mesh_shape=(-1, -1): each axis must be > 0"),
    ({"mesh_shape": (8,)}, 8, "config.mesh_shape=(8,): must be two integers"),
    ({"batch_size": 12}, 8, "config.batch_size=12 is not divisible by the mesh's data axis of 8"),
    ({"eval_batch_size": 100, "mesh_shape": (-1, 2)}, 16,
     "config.eval_batch_size=100 is not divisible by the mesh's data axis of 8 "
     "(config.mesh_shape=(-1, 2) on 16 devices)"),
    ({"distributed.process_id": 2, "distributed.num_processes": 2}, 1,
     "config.distributed.process_id=2"),
])
def test_mesh_that_does_not_fit_fails_naming_both_numbers(overrides, devices, message):
    with pytest.raises(ConfigError) as error:
        validate_config(tiny_config(**overrides), devices)
    assert message in str(error.value)


def test_sharding_needs_no_config_validation():
    """The mesh shape is the mesh's business: importing sharding loads no config checks (which
    read task data modules)."""
    code = "import sys, flax_s2s.sharding; print('flax_s2s.training.config' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=ROOT)
    assert result.stdout.strip() == "False"


def test_make_mesh_refuses_a_mesh_larger_than_the_devices():
    with pytest.raises(ConfigError, match=r"holds 2 devices, but there are 1"):
        sharding.make_mesh((2, 1))
    mesh = sharding.make_mesh((-1, 1))
    assert dict(mesh.shape) == {"data": 1, "model": 1}


def test_resuming_with_another_process_count_names_both_counts(tmp_path):
    from flax_s2s.data import pipeline
    from flax_s2s.data.vocab import SymbolVocab

    vocab = SymbolVocab.build("0123456789+")
    examples = pipeline.tokenize([("1+1", "2")] * 4, vocab, vocab, 8, 6)
    iterator = pipeline.train_iterator(pipeline.train_dataset(examples, 2, 0))
    state = {"w": np.ones(3, np.float32)}
    Checkpointer(str(tmp_path)).save(1, state, iterator, {})
    data_dir = tmp_path / "1" / "data"
    (data_dir / "process_0-of-1.json").rename(data_dir / "process_0-of-2.json")  # as 2 would save
    with pytest.raises(ValueError, match=r"saved by 2 processes; resume it with as many .* has 1"):
        Checkpointer(str(tmp_path)).restore(state, iterator)
    assert (tmp_path / "1").exists()  # not set aside as unreadable


# --- the rule table, on shapes alone --------------------------------------------------------------

SIZES = {"data": 2, "model": 4}
# Typical Transformer parameter names (Flax DenseGeneral attention, MLP, embeddings) and shapes:
# d_model 16, 4 heads of 4, MLP 32, vocabulary 40.
TRANSFORMER_SPECS = {
    ("encoder_layers_0/self_attention/query/kernel", (16, 4, 4)): P(None, "model", None),
    ("decoder_layers_1/cross_attention/value/bias", (4, 4)): P("model", None),
    ("decoder_layers_0/self_attention/out/kernel", (4, 4, 16)): P("model", None, None),
    ("encoder_layers_0/self_attention/q_proj/kernel", (16, 16)): P(None, "model"),
    ("encoder_layers_0/mlp/hidden/kernel", (16, 32)): P(None, "model"),
    ("encoder_layers_0/mlp/hidden/bias", (32,)): P("model"),
    ("encoder_layers_0/mlp/output/kernel", (32, 16)): P("model", None),
    ("encoder_layers_0/mlp/output/bias", (16,)): P(None),
    ("src_embed/embedding", (40, 16)): P("model", None),
    ("output_proj/kernel", (16, 40)): P(None, "model"),
    ("output_proj/bias", (40,)): P("model"),
    ("positions/embedding", (64, 16)): P(None, None),  # no rule: replicated
    ("encoder_norm/scale", (16,)): P(None),
    ("decoder_layers_0/self_attention/query/kernel", (16, 3, 4)): P(None, None, None),  # 3 % 4
}


@pytest.mark.parametrize("name, shape", list(TRANSFORMER_SPECS))
def test_rule_table_shards_heads_mlp_and_vocab_over_model(name, shape):
    assert sharding.param_spec(name, shape, SIZES) == TRANSFORMER_SPECS[name, shape]


def test_rules_need_the_rank_they_name():
    # A rank the rule does not describe is not guessed at: replicated.
    assert sharding.logical_axes("self_attention/out/kernel", 4) is None
    assert sharding.param_spec("mlp/hidden/kernel", (2, 16, 32), SIZES) == P(None, None, None)


def _fsdp_reference(spec: P, shape: tuple[int, ...], data: int) -> P:
    """Brute force: among the replicated dimensions that `data` divides, the largest (first on
    ties) goes to `data`."""
    axes = list(spec) + [None] * (len(shape) - len(spec))
    candidates = [(-size, d) for d, size in enumerate(shape) if axes[d] is None and size % data == 0]
    if candidates and data > 1:
        axes[min(candidates)[1]] = "data"
    return P(*axes)


@pytest.mark.parametrize("name, shape", list(TRANSFORMER_SPECS))
def test_fsdp_also_shards_the_largest_divisible_dimension_over_data(name, shape):
    expected = _fsdp_reference(TRANSFORMER_SPECS[name, shape], shape, SIZES["data"])
    assert sharding.param_spec(name, shape, SIZES, fsdp=True) == expected


# --- 8 devices, in a subprocess ---------------------------------------------------------------------

# Non-replicated parameters of each model on the (4, 2) mesh without FSDP; all others replicated.
SHARDED_PARAMS = {
    "lstm": {
        "src_embed/embedding": ["model", None],
        "tgt_embed/embedding": ["model", None],
        "output_proj/kernel": [None, "model"],
        "output_proj/bias": ["model"],
    },
    "transformer": {
        "src_embed/embedding": ["model", None],
        "tgt_embed/embedding": ["model", None],
        "output_proj/kernel": [None, "model"],
        "output_proj/bias": ["model"],
        **{
            f"{layer}/{attention}/{projection}/{kind}": (
                [None, "model", None] if kind == "kernel" else ["model", None]
            )
            for layer, attentions in (("encoder_layers_0", ("self_attention",)),
                                      ("decoder_layers_0", ("self_attention", "cross_attention")))
            for attention in attentions
            for projection in ("query", "key", "value")
            for kind in ("kernel", "bias")
        },
        **{
            f"{layer}/{attention}/out/kernel": ["model", None, None]
            for layer, attention in (("encoder_layers_0", "self_attention"),
                                     ("decoder_layers_0", "self_attention"),
                                     ("decoder_layers_0", "cross_attention"))
        },
        **{
            name: spec
            for layer in ("encoder_layers_0", "decoder_layers_0")
            for name, spec in ((f"{layer}/mlp/hidden/kernel", [None, "model"]),
                               (f"{layer}/mlp/hidden/bias", ["model"]),
                               (f"{layer}/mlp/output/kernel", ["model", None]))
        },
    },
}


def _strip(spec: list) -> list:
    """A spec without trailing replicated dimensions (P(None, None) == P())."""
    spec = list(spec)
    while spec and spec[-1] is None:
        spec.pop()
    return spec


@pytest.fixture(scope="module", params=sorted(SHARDED_PARAMS))
def mesh_checks(request, tmp_path_factory):
    checkpoint_dir = tmp_path_factory.mktemp("mesh_checkpoints")
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": FAST_COMPILE}
    result = subprocess.run(
        [sys.executable, os.path.join(TESTS, "sharding_checks.py"), request.param, str(checkpoint_dir)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    checks = json.loads(result.stdout.strip().splitlines()[-1])
    assert checks["device_count"] == 8
    return request.param, checks


@pytest.mark.slow
def test_ten_steps_on_each_mesh_match_one_device(mesh_checks):
    _, checks = mesh_checks
    assert set(checks["meshes"]) == {"8x1", "4x2", "2x4_fsdp"}
    reference = checks["reference_losses"]
    assert reference[-1] < reference[0] - 0.3  # it learns, so parameters really move
    for name, run in checks["meshes"].items():
        np.testing.assert_allclose(run["losses"], reference, rtol=1e-5, err_msg=name)
        assert run["param_diff"] < 1e-4, name


@pytest.mark.slow
def test_parameters_and_optimizer_state_are_sharded_as_the_rules_say(mesh_checks):
    model_type, checks = mesh_checks
    sharded = SHARDED_PARAMS[model_type]
    params = checks["specs"]["4x2"]["params"]
    assert set(sharded) <= set(params)
    for name, spec in params.items():
        assert _strip(spec) == _strip(sharded.get(name, [])), name

    fsdp_params = checks["specs"]["2x4_fsdp"]["params"]
    shapes = checks["param_shapes"]
    for name, spec in fsdp_params.items():
        expected = _fsdp_reference(P(*sharded.get(name, [])), tuple(shapes[name]), 2)
        assert _strip(spec) == _strip(list(expected)), name

    for mesh_name in ("4x2", "2x4_fsdp"):
        specs = checks["specs"][mesh_name]
        mirrored = {name: 0 for name in specs["params"]}
        for path, spec in specs["opt_state"].items():
            owner = [name for name in specs["params"] if path.endswith("/" + name)]
            if owner:  # adam's mu and nu: the parameter's sharding
                assert _strip(spec) == _strip(specs["params"][owner[0]]), path
                mirrored[owner[0]] += 1
            else:  # step counts
                assert _strip(spec) == [], path
        assert set(mirrored.values()) == {2}, mirrored


@pytest.mark.slow
def test_checkpoint_from_8x1_restores_onto_2x4_and_one_device_and_training_continues(mesh_checks):
    _, checks = mesh_checks
    expected = checks["meshes"]["8x1"]["losses"][5:]
    for name, resumed in checks["resumed"].items():
        assert resumed["step"] == 5
        np.testing.assert_allclose(resumed["losses"], expected, rtol=1e-5, err_msg=name)
    # Restored straight into the target mesh's shardings, not the ones that saved it.
    assert checks["resumed"]["2x4_fsdp"]["specs"] == checks["specs"]["2x4_fsdp"]
    assert checks["resumed"]["2x4_fsdp"]["device_counts"] == [8]
    assert checks["resumed"]["1x1"]["device_counts"] == [1]


@pytest.mark.slow
def test_warm_start_variables_land_in_the_mesh_shardings_unchanged(mesh_checks):
    _, checks = mesh_checks
    warm = checks["warm_start"]
    assert warm["equal"] and warm["step"] == 0
    assert warm["specs"] == checks["specs"]["2x4_fsdp"]["params"]


@pytest.mark.slow
def test_eval_and_decode_on_a_mesh_match_one_device(mesh_checks):
    _, checks = mesh_checks
    result = checks["eval_decode"]
    assert result["metrics_one_device"]["token_accuracy"] > 0
    assert result["metrics_diff"] < 1e-5
    assert result["tokens_equal"]
    assert result["scores_diff"] < 1e-4


# --- two processes joined by jax.distributed --------------------------------------------------------

TINY = [
    "--config.model.emb_dim=8", "--config.model.hidden_dim=16", "--config.model.attention_dim=8",
    "--config.batch_size=16", "--config.log_every=1", "--config.eval_every=1000",
    "--config.checkpoint_every=3", "--config.num_train_steps=6", "--config.mesh_shape=(4,2)",
    *ROLLED_FLAGS,
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(workdir, data_dir, devices: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"}
    command = [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={workdir}",
               f"--config.data_dir={data_dir}", *TINY, *extra]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _records(workdir, split: str) -> list[dict]:
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return [r for r in records if r["split"] == split]


def _train_losses(workdir) -> list[float]:
    return [r["loss"] for r in _records(workdir, "train")]


@pytest.mark.slow
def test_two_processes_of_4_devices_match_one_process_of_8(tmp_path, addition_data_dir):
    port = _free_port()
    two = [
        _start(tmp_path / "two", addition_data_dir, 4,
               f"--config.distributed.coordinator_address=127.0.0.1:{port}",
               "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}")
        for i in range(2)
    ]
    one = _start(tmp_path / "one", addition_data_dir, 8)
    outputs = [process.communicate(timeout=900) for process in (*two, one)]
    for process, (out, err) in zip((*two, one), outputs, strict=True):
        assert process.returncode == 0, out[-2000:] + err[-4000:]

    np.testing.assert_allclose(_train_losses(tmp_path / "two"), _train_losses(tmp_path / "one"),
                               rtol=1e-5)
    assert len(_train_losses(tmp_path / "two")) == 6  # process 1 wrote no metrics
    (two_test,), (one_test,) = _records(tmp_path / "two", "test"), _records(tmp_path / "one", "test")
    for name in ("loss", "token_accuracy", "fr_token_accuracy", "exact_match"):
        assert abs(two_test[name] - one_test[name]) < 1e-5, name
    assert "final test" in outputs[0][0] and "final test" not in outputs[1][0]
    assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == ["3", "6"]
    two_params = Checkpointer(str(tmp_path / "two" / "checkpoints")).restore_variables()
    one_params = Checkpointer(str(tmp_path / "one" / "checkpoints")).restore_variables()
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), two_params, one_params)
