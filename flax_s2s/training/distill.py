"""Token-level knowledge distillation: the student's loss mixes the cross-entropy with the gold
tokens and the KL divergence to its teachers' distributions on the same teacher-forced prefix.

```
config.distill.teachers = ("runs/g2p_a", "runs/g2p_b")   # trained workdirs; () = off
config.distill.weight = 0.5                              # 0: cross-entropy alone, 1: KL alone
config.distill.temperature = 2.0
```
loss = (1 - weight) * CE(gold) + weight * T^2 * KL(teachers_T || student_T), summed over the
non-pad target tokens and divided by their count like the cross-entropy alone. p_T is a softmax
of the logits divided by T; the T^2 keeps the gradient's scale as T changes (Hinton et al.,
2015). The logged `distill_kl` is the per-token KL at T, without the T^2.

The teachers' distribution is the arithmetic mean of their probabilities (each at T), the
mixture an ensemble decodes with (`flax_s2s.ensemble`): the student imitates the very
distribution whose outputs it is meant to reach, and a token any one teacher finds likely keeps
its mass, where the log-average (a normalised geometric mean) gives the teachers a veto over
each other's alternatives and sharpens the target beyond what any of them predicts.

The teachers are loaded once (`load_teachers`: each workdir's newest readable checkpoint, its
moving average where it kept one) and run inside the jitted train step, in inference mode, on
the batch the student reads. Their variables are an argument of the step of their own, placed
on the mesh by the rules of the student's parameters (`place_teachers`), never in the optimizer
state, and no gradient flows into them. A teacher may be of any architecture; it must read and
write the student's vocabularies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from flax_s2s import config_checks, sharding
from flax_s2s.data.vocab import Vocab
from flax_s2s.errors import ConfigError
from flax_s2s.forcing import always_gold
from flax_s2s.models import Seq2Seq
from flax_s2s.workdirs import WorkdirError, load_workdir

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Teachers:
    """The teachers of a run: their models (static, hashable) and their variables placed on the
    mesh, with those placements (the train step's in_shardings)."""

    models: tuple[Seq2Seq, ...]
    variables: tuple[dict[str, Any], ...]
    shardings: tuple[Any, ...]


def enabled(config: ml_collections.ConfigDict) -> bool:
    """Whether the run distils from teachers (`config.distill.teachers` non-empty)."""
    return bool(config.get("distill") and tuple(config.distill.teachers))


def teacher_log_probs(
    models: tuple[Seq2Seq, ...], variables: tuple[Any, ...], src_tokens: Array,
    tgt_inputs: Array, temperature: float, src_segments: dict[str, Array] | None = None,
    tgt_segments: dict[str, Array] | None = None,
) -> Array:
    """The log of the teachers' mean probabilities at temperature T, [batch, tgt_len, vocab]:
    every teacher reads src_tokens [batch, src_len] and the decoder inputs [batch, tgt_len] (in
    inference mode); no gradient flows back."""
    per_teacher = []
    for model, teacher_variables in zip(models, variables, strict=True):
        encoded = model.encode(teacher_variables, src_tokens, segments=src_segments)
        logits = model.forward(teacher_variables, encoded, tgt_inputs, segments=tgt_segments)
        per_teacher.append(jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, -1))
    stacked = jnp.stack(per_teacher)
    mean = jax.nn.logsumexp(stacked, axis=0) - jnp.log(float(len(per_teacher)))
    return jax.lax.stop_gradient(mean)


def kl_sum(teacher_log_probs: Array, student_logits: Array, weights: Array,
           temperature: float) -> Array:
    """sum over tokens of weights * KL(p || q_T): p = exp(teacher_log_probs) [batch, len, vocab],
    q_T = softmax(student_logits / T) [batch, len, vocab], weights [batch, len] (0 at pads)."""
    student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, -1)
    p = jnp.exp(teacher_log_probs)
    # p log p is 0 where p is 0 (a token no teacher gives any mass)
    per_token = jnp.sum(jnp.where(p > 0, p * (teacher_log_probs - student), 0.0), axis=-1)
    return jnp.sum(per_token * weights)


# (teacher variables, batch, decoder inputs, src segments, tgt segments, logits, weights) -> KL sum
DistillTerm = Callable[..., Array]


def make_distill_term(models: tuple[Seq2Seq, ...], temperature: float) -> DistillTerm:
    """The KL sum of a batch (`kl_sum`) against `models` at `temperature`, their variables given
    at each call."""

    def term(variables, batch, tgt_inputs, src_segments, tgt_segments, logits, weights):
        teacher = teacher_log_probs(models, variables, batch["src_tokens"], tgt_inputs,
                                    temperature, src_segments, tgt_segments)
        return kl_sum(teacher, logits, weights, temperature)

    return term


def mixed_loss(cross_entropy_sum: Array, kl: Array, config: ml_collections.ConfigDict) -> Array:
    """(1 - weight) * cross-entropy + weight * T^2 * KL, both token sums."""
    weight, temperature = config.distill.weight, config.distill.temperature
    return (1.0 - weight) * cross_entropy_sum + weight * temperature**2 * kl


def load_teachers(
    config: ml_collections.ConfigDict, src_vocab: Vocab, tgt_vocab: Vocab, workdir: str,
    mesh: Mesh,
) -> Teachers | None:
    """The teachers of `config.distill.teachers` (None without any), checked against the
    student's vocabularies and lengths and placed on `mesh`; ConfigError naming the teacher and
    what differs otherwise."""
    if not enabled(config):
        return None
    models, variables = [], []
    for teacher_dir in config.distill.teachers:
        try:
            trained = load_workdir(teacher_dir)
        except WorkdirError as error:
            raise ConfigError(f"config.distill.teachers: {error}") from None
        for side, theirs, ours in (("target", trained.tgt_vocab, tgt_vocab),
                                   ("source", trained.src_vocab, src_vocab)):
            if theirs != ours:
                raise ConfigError(
                    f"config.distill.teachers: the {side} vocabulary of {teacher_dir} "
                    f"({len(theirs)} tokens) differs from the {side} vocabulary of {workdir} "
                    f"({len(ours)} tokens); a teacher must read and write the student's symbols")
        _check_teacher_config(trained.config, config, teacher_dir)
        if config.pack and not trained.model.takes_packed_rows:
            raise ConfigError(f"config.pack=True: teacher {teacher_dir} "
                              f"({trained.config.model.type}) cannot read packed rows")
        models.append(trained.model)
        variables.append(trained.variables)
    return place_teachers(tuple(models), tuple(variables), mesh, config.fsdp)


def _check_teacher_config(teacher: ml_collections.ConfigDict, student: ml_collections.ConfigDict,
                          teacher_dir: str) -> None:
    """A teacher reads the student's sources as it was trained to: the same EOS rule, and
    lengths within its own."""
    src_eos = (teacher.vocab.get("src_eos", False), student.vocab.get("src_eos", False))
    if src_eos[0] != src_eos[1]:
        raise ConfigError(f"config.distill.teachers: {teacher_dir} has vocab.src_eos="
                          f"{src_eos[0]}, this run {src_eos[1]}; a teacher must read the sources "
                          "as the student does")
    for key in ("max_src_len", "max_tgt_len"):
        if student[key] > teacher[key]:
            raise ConfigError(f"config.{key}={student[key]} exceeds teacher {teacher_dir}'s "
                              f"{key}={teacher[key]}: it never read such lengths")


def place_teachers(models: tuple[Seq2Seq, ...], variables: tuple[dict[str, Any], ...],
                   mesh: Mesh, fsdp: bool = False) -> Teachers:
    """The teachers' variables on `mesh`: parameters by the student's rules
    (`sharding.param_shardings`), everything else (BatchNorm statistics) replicated."""
    shardings = tuple(
        {key: (sharding.param_shardings(value, mesh, fsdp) if key == "params" else
               jax.tree.map(lambda _: sharding.replicated(mesh), value))
         for key, value in teacher.items()}
        for teacher in variables)
    placed = tuple(jax.device_put(v, s) for v, s in zip(variables, shardings, strict=True))
    return Teachers(models, placed, shardings)


def check_config(config: ml_collections.ConfigDict) -> None:
    """`config.distill`: teachers (workdirs), a weight in [0, 1], a temperature > 0; the
    teachers score the gold prefix, so the student reads it too (no scheduled sampling)."""
    distill = config.distill
    teachers = distill.teachers
    if isinstance(teachers, str) or not all(isinstance(t, str) and t for t in teachers):
        raise ConfigError(f"config.distill.teachers={teachers!r}: must be a tuple of workdirs "
                          "(() for none)")
    config_checks.fraction(config, "distill.weight", closed=True)
    config_checks.positive(config, "distill.temperature")
    if not teachers:
        return
    if not always_gold(config.teacher_forcing):
        raise ConfigError("config.distill.teachers with scheduled sampling (config.teacher_forcing"
                          " not always gold): the teachers score the gold prefix, so the student "
                          "must read it too")
    if config.get("mrt", {}).get("weight", 0.0) > 0:
        raise ConfigError("config.distill.teachers with config.mrt.weight > 0: choose one of "
                          "distillation and minimum risk training")
