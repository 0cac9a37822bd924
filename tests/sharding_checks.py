"""Sharding checks on 8 CPU devices, run as a script by tests/test_sharding.py: the device count
is fixed when jax is imported, so these cannot share the pytest process.

`python tests/sharding_checks.py MODEL_TYPE CHECKPOINT_DIR` trains a tiny model for 10 steps on one
device and on the meshes (8, 1), (4, 2) and (2, 4) (the last with FSDP); saves on (8, 1) at step 5
and resumes on (2, 4) and on one device; evaluates and decodes the same parameters on one device
and on (2, 4). It prints one JSON object (last line of stdout) that the test asserts on.

Compiles dominate the run time, so each mesh compiles one train step, and only the one-device and
the (2, 4) states are initialised by a compiled init; the others start from a copy of the
one-device initial state.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax  # noqa: E402  (after XLA_FLAGS)
import jax  # noqa: E402
import numpy as np  # noqa: E402

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [TESTS, os.path.dirname(TESTS)]

from conftest import ROLLED, tiny_config  # noqa: E402

from flax_s2s import decoding, sharding, training  # noqa: E402
from flax_s2s.checkpoint import Checkpointer  # noqa: E402
from flax_s2s.data import pipeline  # noqa: E402
from flax_s2s.data.vocab import SymbolVocab  # noqa: E402
from flax_s2s.models import build_model  # noqa: E402

STEPS, SAVE_STEP = 10, 5
MESHES = {"8x1": ((8, 1), False), "4x2": ((4, 2), False), "2x4_fsdp": ((2, 4), True)}
# 16 ids (12 symbols and PAD, BOS, EOS, UNK): vocabulary-sized dimensions divide every model axis.
VOCAB = SymbolVocab.build("0123456789+-")
PAIRS = [(f"{a}+{b}", str(a + b)) for a, b in np.random.default_rng(0).integers(0, 999, (64, 2))]
# Config overrides per model type, on top of tests/conftest.py's tiny (LSTM) config.
MODEL_OVERRIDES: dict[str, dict] = {
    "lstm": {"model.type": "lstm"},
    # 4 heads and an MLP of 32 divide a model axis of 2 or 4
    "transformer": {"model.type": "transformer", "model.d_model": 16, "model.num_heads": 4,
                    "model.mlp_dim": 32, "model.num_decoder_layers": 1},
}


def _max_difference(first: dict, second: dict) -> float:
    """Largest difference between two eval results: scalars, and lists by position (None where
    no example has a token there, which must then agree)."""
    differences = [0.0]
    for key, value in first.items():
        values = zip(value, second[key], strict=True) if isinstance(value, list) else [(value, second[key])]
        for a, b in values:
            differences.append(float("inf") if (a is None) != (b is None) else abs((a or 0) - (b or 0)))
    return max(differences)


class Job:
    """One tiny model and its data; `on_mesh` compiles its steps once per mesh."""

    def __init__(self, model_type: str) -> None:
        self.config = tiny_config(**{"batch_size": 16, "eval_batch_size": 16, **ROLLED,
                                     "optimizer.warmup_steps": 2, **MODEL_OVERRIDES[model_type]})
        config = self.config
        self.examples = pipeline.tokenize(PAIRS, VOCAB, VOCAB, config.max_src_len, config.max_tgt_len)
        self.model = build_model(config, len(VOCAB), len(VOCAB))
        self.tx = training.make_optimizer(config)
        self.dataset = pipeline.train_dataset(self.examples, config.batch_size, config.seed)
        self.abstract = training.abstract_train_state(self.model, self.tx, config.seed, self.dataset[0])
        self._meshes: dict = {}

    def on_mesh(self, shape: tuple[int, int], fsdp: bool = False):
        """(state shardings, jitted steps) on a mesh; (1, 1) is the first device alone."""
        if (shape, fsdp) not in self._meshes:
            devices = jax.devices()[:1] if shape == (1, 1) else jax.devices()
            mesh = sharding.make_mesh(shape, devices)
            shardings = sharding.train_state_shardings(self.abstract, self.tx, mesh, fsdp)
            steps = training.jit_steps(self.model, self.tx, self.config, mesh, shardings)
            self._meshes[shape, fsdp] = (shardings, steps)
        return self._meshes[shape, fsdp]

    def fresh_state(self, shape, fsdp=False):
        """A train state initialised directly on the mesh."""
        shardings, _ = self.on_mesh(shape, fsdp)
        return training.create_train_state(self.model, self.tx, self.config.seed, self.dataset[0],
                                           shardings)

    def placed(self, host_state, shape, fsdp=False):
        """A host copy of a train state, placed on the mesh."""
        shardings, _ = self.on_mesh(shape, fsdp)
        return jax.device_put(host_state, shardings)

    def train(self, state, shape, batches, fsdp=False):
        _, steps = self.on_mesh(shape, fsdp)
        losses = []
        for batch in batches:
            state, step_metrics = steps.train(state, batch)
            losses.append(float(step_metrics["loss"]))
        return state, losses


def _specs(tree) -> dict[str, list]:
    """{"a/b/kernel": the PartitionSpec as a list (None: replicated dimension)}."""
    return {sharding.path_name(path): [list(a) if isinstance(a, tuple) else a for a in x.sharding.spec]
            for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def _max_diff(a, b) -> float:
    """Largest parameter difference, leaving out attention key biases: softmax over keys is
    invariant to them, so their gradient is 0 up to float noise, which Adam's normalisation turns
    into full-size steps of arbitrary sign that differ between device layouts."""
    a, b = flax.traverse_util.flatten_dict(a, sep="/"), flax.traverse_util.flatten_dict(b, sep="/")
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k]))))
               for k in a if not k.endswith("key/bias"))


START = time.time()


def _log(message: str) -> None:
    print(f"[{time.time() - START:6.1f}s wall, {time.process_time():6.1f}s cpu] {message}",
          file=sys.stderr, flush=True)


def main(model_type: str, checkpoint_dir: str) -> dict:
    job = Job(model_type)
    batches = [job.dataset[i] for i in range(STEPS)]
    initial = jax.device_get(job.fresh_state((1, 1)))
    reference, reference_losses = job.train(job.placed(initial, (1, 1)), (1, 1), batches)
    _log("trained on one device")
    result: dict = {"device_count": jax.device_count(), "reference_losses": reference_losses,
                    "meshes": {}, "specs": {}, "param_shapes": {
                        sharding.path_name(path): list(x.shape)
                        for path, x in jax.tree_util.tree_leaves_with_path(job.abstract.params)}}

    for name, (shape, fsdp) in MESHES.items():
        start = job.fresh_state(shape, fsdp) if fsdp else job.placed(initial, shape)
        if name == "8x1":  # through the data iterator, saving at SAVE_STEP
            iterator = pipeline.train_iterator(job.dataset)
            state, losses = job.train(start, shape, [next(iterator) for _ in range(SAVE_STEP)])
            Checkpointer(checkpoint_dir).save(SAVE_STEP, state, iterator, {"mesh": list(shape)})
            state, more = job.train(state, shape, [next(iterator) for _ in range(STEPS - SAVE_STEP)])
            losses += more
        else:
            state, losses = job.train(start, shape, batches, fsdp)
        result["meshes"][name] = {"losses": losses, "param_diff": _max_diff(state.params, reference.params)}
        result["specs"][name] = {"params": _specs(state.params), "opt_state": _specs(state.opt_state)}
        _log(f"trained on {name}")

    result["resumed"] = {}
    for name, shape, fsdp in (("2x4_fsdp", (2, 4), True), ("1x1", (1, 1), False)):
        shardings, _ = job.on_mesh(shape, fsdp)
        iterator = pipeline.train_iterator(job.dataset)
        template = sharding.with_shardings(job.abstract, shardings)
        restored = Checkpointer(checkpoint_dir).restore(template, iterator)
        _log(f"restored on {name}")
        record = {"step": int(restored.step),
                  "specs": {"params": _specs(restored.params), "opt_state": _specs(restored.opt_state)},
                  "device_counts": sorted({len(x.sharding.device_set) for x in jax.tree.leaves(restored)})}
        _, record["losses"] = job.train(restored, shape,
                                        [next(iterator) for _ in range(STEPS - SAVE_STEP)], fsdp)
        result["resumed"][name] = record
        _log(f"resumed on {name}")

    # A warm start's variables, given on the host, land in the (2, 4) FSDP shardings.
    shardings, _ = job.on_mesh((2, 4), True)
    warm = training.create_train_state(job.model, job.tx, job.config.seed, job.dataset[0],
                                       shardings, variables=jax.device_get(reference.variables))
    result["warm_start"] = {
        "step": int(warm.step), "specs": _specs(warm.params),
        "equal": all(np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(jax.device_get(warm.params)), jax.tree.leaves(jax.device_get(reference.params)),
            strict=True)),
    }
    _log("warm-started on (2, 4) with FSDP")

    # Eval and decode the same parameters on one device and on (2, 4): only the mesh differs.
    outputs = {}
    for shape, fsdp in (((1, 1), False), ((2, 4), True)):
        shardings, steps = job.on_mesh(shape, fsdp)
        variables = jax.device_put(reference.variables, shardings.variables)
        metrics = training.evaluate(steps.evaluator, variables, job.examples,
                                    job.config.eval_batch_size)
        tokens = steps.evaluator.decode(variables, job.examples.src[:16])
        _, _, scores = decoding.greedy(job.model, variables, job.examples.src[:16],
                                       max_len=job.config.max_tgt_len)
        outputs[shape] = (metrics, np.asarray(tokens), np.asarray(scores))
        _log(f"evaluated and decoded on {shape}")
    (metrics_1, tokens_1, scores_1), (metrics_24, tokens_24, scores_24) = outputs.values()
    result["eval_decode"] = {
        "metrics_one_device": metrics_1,
        "metrics_diff": _max_difference(metrics_1, metrics_24),
        "tokens_equal": bool((tokens_1 == tokens_24).all()),
        "scores_diff": float(np.abs(scores_1 - scores_24).max()),
    }
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
