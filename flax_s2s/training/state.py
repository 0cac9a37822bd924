"""The train state and its optimizer: what a train step reads and writes, and how it starts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from flax_s2s import config_checks, lora
from flax_s2s.models import Seq2Seq
from flax_s2s.training import frozen

Array = jax.Array
LORA_STREAM = 0x10A  # folded into the init key: the LoRA factors' own key


@flax.struct.dataclass
class TrainState:
    """Everything the next train step depends on (with the data position, saved beside it).

    `rng` stays fixed; each step derives its own keys as fold_in(rng, step), so no key is reused
    and a resumed run draws what an uninterrupted one would. `batch_stats` holds BatchNorm's
    running statistics ({} for models without BatchNorm). `ema_params` is the exponential moving
    average of `params` (`config.ema_decay` > 0; the same tree and shardings), {} when off: a
    checkpoint of a run without it holds no such field, and restores as before
    (`Checkpointer.restore`).
    """

    step: Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: Array
    ema_params: Any = flax.struct.field(default_factory=dict)

    @property
    def variables(self) -> dict[str, Any]:
        """The raw (trained) variables."""
        return {"params": self.params, "batch_stats": self.batch_stats}

    def eval_variables(self, use_ema: bool = True) -> dict[str, Any]:
        """The variables to evaluate and decode with: the average of the parameters where the
        state keeps one and `use_ema`, else the raw ones. BatchNorm statistics are the raw
        parameters' running averages either way (the average has none of its own)."""
        params = self.ema_params if use_ema and self.ema_params else self.params
        return {"params": params, "batch_stats": self.batch_stats}


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """adamw with linear warmup, cosine decay to end_lr_factor * peak, global-norm clipping,
    over the parameters the config does not freeze (`frozen.wrap_optimizer`)."""
    opt = config.optimizer
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=opt.learning_rate,
        warmup_steps=opt.warmup_steps,
        decay_steps=max(config.num_train_steps, opt.warmup_steps + 1),
        end_value=opt.learning_rate * opt.end_lr_factor,
    )
    return frozen.wrap_optimizer(optax.chain(
        optax.clip_by_global_norm(opt.grad_clip_norm),
        optax.adamw(schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay),
    ), config)


def _state_initializer(
    model: Seq2Seq, tx: optax.GradientTransformation, seed: int, batch: dict[str, np.ndarray],
    ema: bool = False, lora_spec: lora.LoraSpec | None = None,
) -> Callable[[], TrainState]:
    """A traceable () -> TrainState. Initialisation reads only the batch's shapes, so it needs
    no data on the devices and gives the same parameters whatever the batch size or mesh. With
    `ema`, the average of the parameters starts at the parameters themselves; with `lora_spec`,
    the LoRA factors are added to the (initialised or given) parameters, from their own key."""
    src_shape, tgt_shape = batch["src_tokens"].shape, batch["tgt_tokens"].shape

    def init(variables: dict[str, Any] | None = None) -> TrainState:
        """`variables` (a warm start) replace the seeded initialisation; the rest is fresh."""
        init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
        if variables is None:
            variables = model.init(init_rng, jnp.ones(src_shape, jnp.int32),
                                   jnp.ones(tgt_shape, jnp.int32))
        params = variables["params"]
        if lora_spec is not None:
            params = lora.add_factors(params, lora_spec, jax.random.fold_in(init_rng, LORA_STREAM))
        # int32, not weak-typed: the same type as a restored step, so resuming reuses the compile
        step = jnp.zeros((), jnp.int32)
        return TrainState(
            step=step,
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(params),
            rng=train_rng,
            # `+ 0` makes the average its own buffer, never an alias of the parameters (a warm
            # start's are inputs here), so that the train step can donate both
            ema_params=jax.tree.map(lambda p: p + 0, params) if ema else {},
        )

    return init


def create_train_state(
    model: Seq2Seq,
    tx: optax.GradientTransformation,
    seed: int,
    batch: dict[str, np.ndarray],
    shardings: TrainState | None = None,
    variables: dict[str, Any] | None = None,
    ema: bool = False,
    lora_spec: lora.LoraSpec | None = None,
) -> TrainState:
    """A fresh train state; with `shardings` (`sharding.train_state_shardings`) every array is
    created directly in its place on the mesh, never whole on one device. `variables`
    ({"params", "batch_stats"}, e.g. of a warm start) are taken instead of initialising them;
    optimizer state, step and key are fresh either way. `ema`: keep an average of the
    parameters (`config.ema_decay` > 0), starting at them. `lora_spec`
    (`lora.LoraSpec.from_config`): add LoRA factors to the parameters."""
    init = jax.jit(_state_initializer(model, tx, seed, batch, ema, lora_spec),
                   out_shardings=shardings)
    if variables is None:
        return init()
    if shardings is not None:
        where = {**shardings.variables, "params": lora.without_factors(shardings.params)}
        variables = jax.tree.map(_place, variables, where)
    return init(variables)


def _place(value: Any, where: jax.sharding.Sharding) -> Array:
    """A host value as a global array: each process fills only the shards its devices hold."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, where, lambda index: value[index])


def abstract_train_state(
    model: Seq2Seq, tx: optax.GradientTransformation, seed: int, batch: dict[str, np.ndarray],
    ema: bool = False, lora_spec: lora.LoraSpec | None = None,
) -> TrainState:
    """The train state's shapes and dtypes (ShapeDtypeStructs), computed without allocating."""
    return jax.eval_shape(_state_initializer(model, tx, seed, batch, ema, lora_spec))


def check_config(config: ml_collections.ConfigDict) -> None:
    """The optimizer's learning rate."""
    config_checks.positive(config, "optimizer.learning_rate")
