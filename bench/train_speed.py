"""Steps/s of a train.py run, read from its workdir's metrics.jsonl, and the wall time that rate
gives another step count (the full recipe's, from a short run of it).

    python bench/train_speed.py WORKDIR [--steps 70000 --eval-every 7000] [--name NAME]

The rate is the median over log intervals of steps / seconds between consecutive train records,
so one interval that paid a compile (a length bucket met late) does not move it. Startup is the
time before steady stepping (data preparation, restoring, the first compiles): the first train
record's wall time less its steps at that rate. An eval's time is the last eval record's wall
time less the last train record's (the final checkpoint, the decode's compile and the decode);
the projection counts one such eval per eval of the recipe, an upper estimate since it compiles
once. Reads the file only (with `flax_s2s.logs.read_records`); needs no jax.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from flax_s2s.logs import read_records  # noqa: E402  (the repository root first)


def speed(
    records: Sequence[dict[str, Any]], steps: int | None = None, eval_every: int | None = None
) -> dict[str, float]:
    """{"steps", "steps_per_s", "startup_s", "eval_s", "wall_s"} of a run, plus "projected_s"
    for `steps` steps with an eval every `eval_every` (and one at the end) when `steps` is given.
    Needs at least two train records."""
    train = [r for r in records if r.get("split") == "train"]
    if len(train) < 2:
        raise ValueError(f"{len(train)} train records: need two or more log intervals")
    rates = [(b["step"] - a["step"]) / max(b["wall_s"] - a["wall_s"], 1e-9)
             for a, b in zip(train, train[1:], strict=False) if b["step"] > a["step"]]
    rate = statistics.median(rates)
    startup = max(train[0]["wall_s"] - train[0]["step"] / rate, 0.0)
    evals = [r for r in records if r.get("split") != "train" and r["step"] == train[-1]["step"]]
    eval_s = evals[-1]["wall_s"] - train[-1]["wall_s"] if evals else 0.0
    result = {"steps": float(train[-1]["step"]), "steps_per_s": rate, "startup_s": startup,
              "eval_s": eval_s, "wall_s": float(records[-1]["wall_s"])}
    if steps is not None:
        evals_in_recipe = ((steps - 1) // eval_every + 1) if eval_every else 1
        result["projected_s"] = startup + steps / rate + evals_in_recipe * eval_s
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("workdir")
    parser.add_argument("--steps", type=int, help="the recipe's num_train_steps, to project")
    parser.add_argument("--eval-every", type=int, help="the recipe's eval_every")
    parser.add_argument("--name", default="", help="a label for the printed line")
    args = parser.parse_args(argv)
    result = speed(read_records(os.path.join(args.workdir, "metrics.jsonl")), args.steps,
                   args.eval_every)
    line = (f"{args.name or args.workdir}: {result['steps']:.0f} steps at "
            f"{result['steps_per_s']:.1f} steps/s (median over log intervals); startup "
            f"{result['startup_s']:.1f} s, final eval {result['eval_s']:.1f} s, run "
            f"{result['wall_s']:.1f} s")
    if "projected_s" in result:
        line += (f"; {args.steps} steps (eval every {args.eval_every}) projected: "
                 f"{result['projected_s'] / 60:.1f} min")
    print(line)
    return result


if __name__ == "__main__":
    main()
