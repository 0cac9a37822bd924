"""The gold probability's schedules: p(step) over train steps and q(t) over the decoder's input
positions (Liu et al., EMNLP 2021), from `config.teacher_forcing`, and the rule their parameters
follow (a probability that never increases)."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from flax_s2s.errors import ConfigError

Array = jax.Array
Schedule = Callable[[Array | int], Array]

SCHEDULES = ("constant", "linear", "exponential", "inverse_sigmoid")
POSITION_SCHEDULES = ("none", "linear", "exponential", "inverse_sigmoid")
COMBINES = ("product", "min")  # how p(step) and q(t) make p(step, t)


def make_schedule(tf_config: ml_collections.ConfigDict) -> Schedule:
    """p(step), the probability of feeding the gold token, from `config.teacher_forcing`.

    - constant: p
    - linear: max(floor, k - slope * step)
    - exponential: max(floor, k ** step), 0 < k < 1
    - inverse_sigmoid: max(floor, k / (k + exp(step / k))), k >= 1

    The returned function takes a Python int or an integer array (traced or not) and returns
    float32 p of the same shape; it is finite at any step an int32 can count.
    """
    return _decay(tf_config.schedule, tf_config.p, tf_config.k, tf_config.slope, tf_config.floor)


def make_position_schedule(tf_config: ml_collections.ConfigDict) -> Schedule | None:
    """q(t) over the decoder's input position t (0 reads BOS) from `config.teacher_forcing`'s
    `position_*` fields, the same curves as `make_schedule` with t in place of the step:
    exponential: max(position_floor, position_k ** t) (Liu et al. 2021 use 0.99 ** t), linear:
    max(position_floor, position_k - position_slope * t), inverse_sigmoid:
    max(position_floor, position_k / (position_k + exp(t / position_k))). None for "none"."""
    kind = tf_config.position_schedule
    if kind == "none":
        return None
    if kind not in POSITION_SCHEDULES:
        raise ValueError(f"teacher_forcing.position_schedule must be one of "
                         f"{list(POSITION_SCHEDULES)}, got {kind!r}")
    return _decay(kind, 1.0, tf_config.position_k, tf_config.position_slope,
                  tf_config.position_floor)


def _decay(kind: str, p: float, k: float, slope: float, floor: float) -> Schedule:
    """One of SCHEDULES as a function of a step (or position), float32, elementwise."""
    if kind == "constant":
        schedule = optax.constant_schedule(p)
    elif kind == "linear":
        # optax computes floor + (k - floor) * (1 - step / transition_steps) until transition_steps
        # and floor after it; a fractional transition length makes its slope exactly `slope`.
        schedule = optax.linear_schedule(
            init_value=k, end_value=floor, transition_steps=(k - floor) / slope
        )
    elif kind == "exponential":
        schedule = optax.exponential_decay(
            init_value=1.0, transition_steps=1, decay_rate=k, end_value=floor
        )
    elif kind == "inverse_sigmoid":
        schedule = _inverse_sigmoid(k, floor)
    else:
        raise ValueError(f"teacher_forcing.schedule must be one of {list(SCHEDULES)}, got {kind!r}")
    # float32, and elementwise on an array of steps (optax's constant schedule ignores its input)
    return lambda step: jnp.broadcast_to(jnp.asarray(schedule(step), jnp.float32), jnp.shape(step))


def _inverse_sigmoid(k: float, floor: float) -> Schedule:
    """max(floor, k / (k + exp(step / k))). Not an optax schedule (optax has no sigmoid decay).

    Written as sigmoid(log k - step / k), which is the same number, so that exp never overflows.
    """

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        return jnp.maximum(floor, jax.nn.sigmoid(jnp.log(k) - step / k))

    return schedule


def inverse_sigmoid_k(midpoint_step: float) -> float:
    """The k >= 1 of the inverse-sigmoid schedule whose p falls to 1/2 at `midpoint_step` > 0:
    the root of k ln k = midpoint_step, found by bisection (k ln k increases for k >= 1)."""
    if not (midpoint_step > 0 and math.isfinite(midpoint_step)):
        raise ValueError(f"midpoint_step={midpoint_step}: must be finite and > 0")
    low, high = 1.0, max(midpoint_step, math.e)  # k ln k is 0 at 1 and >= midpoint at high
    for _ in range(100):  # halves a bracket of at most midpoint_step: ample for float64
        middle = (low + high) / 2
        low, high = (middle, high) if middle * math.log(middle) < midpoint_step else (low, middle)
    return (low + high) / 2


def check_schedules(tf: ml_collections.ConfigDict) -> None:
    """The parameters of p(step) and of q(t) give probabilities in [0, 1] that never increase."""
    for key in ("p", "floor", "position_floor"):
        if not 0.0 <= tf[key] <= 1.0:
            raise ConfigError(f"config.teacher_forcing.{key}={tf[key]}: must be in [0, 1]")
    for prefix, kind, what in (("", tf.schedule, "schedule"),
                               ("position_", tf.position_schedule, "position schedule")):
        k, slope, floor = tf[f"{prefix}k"], tf[f"{prefix}slope"], tf[f"{prefix}floor"]
        needs = {
            "linear": (floor <= k <= 1.0 and slope > 0,
                       f"{prefix}floor <= {prefix}k <= 1 and {prefix}slope > 0"),
            "exponential": (0.0 < k < 1.0, f"0 < {prefix}k < 1"),
            "inverse_sigmoid": (k >= 1.0, f"{prefix}k >= 1"),
        }
        if kind in needs and not needs[kind][0]:
            raise ConfigError(
                f"config.teacher_forcing ({prefix}schedule={kind!r}, {prefix}k={k}, "
                f"{prefix}slope={slope}, {prefix}floor={floor}): the {kind} {what} needs "
                f"{needs[kind][1]}"
            )
