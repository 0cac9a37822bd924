"""What token-level distillation's teachers cost per train step: the jitted step of
`configs/g2p_gru.py`'s model (batch 64, its lengths) with 0, 1 and 2 teachers of the same size
(`config.distill.teachers`; `flax_s2s/training/distill.py`), timed in alternating windows
(`common.compare`).

    taskset -c 1 env PYTHONPATH=. python bench/distill_step.py [--windows 5] [--repeats 5]
        [--no_record]

Random weights and a random batch of G2P's shapes and vocabulary sizes (26 letters, 39 phones,
the 4 specials each): the cost depends on the shapes, not the values. A teacher runs encode and
the teacher-forced decoder forward (no backward, no optimizer), so each is predicted to add about
a third of the plain step (forward ~ 1/3 of forward + backward), plus the KL's softmaxes.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/common.py
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project

import common  # noqa: E402

common.set_threads(1)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import g2p_gru  # noqa: E402
from flax_s2s import training  # noqa: E402
from flax_s2s.models import build_model  # noqa: E402

SRC_VOCAB, TGT_VOCAB = 26 + 4, 39 + 4


def batch(config, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tokens of G2P's shapes: sources of 3-12 letters, targets of 3-10 phones + EOS."""
    rng = np.random.default_rng(seed)
    rows = config.batch_size
    src = np.zeros((rows, config.max_src_len), np.int32)
    tgt = np.zeros((rows, config.max_tgt_len), np.int32)
    for row in range(rows):
        n, m = rng.integers(3, 13), rng.integers(3, 11)
        src[row, :n] = rng.integers(4, SRC_VOCAB, n)
        tgt[row, :m] = rng.integers(4, TGT_VOCAB, m)
        tgt[row, m] = 2  # EOS
    return {"src_tokens": src, "tgt_tokens": tgt}


def steps(config, teachers: int, data: dict[str, np.ndarray]):
    """A callable running one jitted step of the student with `teachers` teachers."""
    model = build_model(config, SRC_VOCAB, TGT_VOCAB)
    tx = training.make_optimizer(config)
    state = training.create_train_state(model, tx, config.seed, data)
    variables = tuple(model.init(jax.random.PRNGKey(seed + 1), data["src_tokens"],
                                 data["tgt_tokens"]) for seed in range(teachers))
    config = config.copy_and_resolve_references()
    config.distill.weight, config.distill.temperature = 0.5, 2.0
    step = jax.jit(training.make_train_step(model, tx, config, teachers=(model,) * teachers))
    extra = (variables,) if teachers else ()

    def run():
        _, step_metrics = step(state, data, *extra)
        jax.block_until_ready(step_metrics["loss"])

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no_record", action="store_true")
    args = parser.parse_args()
    load_before = common.load_average()
    config = g2p_gru.get_config()
    data = batch(config)
    sides = {f"{n} teacher(s)": steps(config, n, data) for n in (0, 1, 2)}
    seconds = common.compare(sides, windows=args.windows, repeats=args.repeats)
    plain = seconds["0 teacher(s)"]
    rows = [(name, f"{s * 1e3:.1f}", f"{s / plain:.2f}", f"{(s - plain) * 1e3:.1f}")
            for name, s in seconds.items()]
    lines = [*common.machine_lines(1, load_before), "",
             "```bash", "taskset -c 1 env PYTHONPATH=. python bench/distill_step.py "
             f"--windows {args.windows} --repeats {args.repeats}", "```", "",
             f"configs/g2p_gru.py's student (batch {config.batch_size}, {config.max_src_len} / "
             f"{config.max_tgt_len} tokens), teachers of its own size; median of {args.windows} "
             f"alternating windows of {args.repeats} steps.", "",
             *common.table(("teachers", "ms / step", "x plain", "ms added"), rows)]
    if args.no_record:
        print("\n".join(lines))
    else:
        common.append_section("Token-level distillation: the teachers' cost per step", lines)


if __name__ == "__main__":
    main()
