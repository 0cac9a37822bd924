"""Sequence-level knowledge distillation (Kim & Rush, 2016): a teacher's (or an ensemble's) beam
outputs for a split, written as parallel text that a student trains on.

```
python -m flax_s2s.cli.distill --workdir runs/teacher [--workdir runs/teacher2 ...] --out DIR
                               [--beam 5] [--data PATH] [--split train] [--keep_references]
                               [--shard_size 10000] [--batch_size 64] [--max_shards N]
                               [--overwrite]
```
The split is read as the first teacher's run reads it (its task, `--data` in place of its
`config.data_path`), each distinct source once, in input order; several `--workdir`s decode as
one ensemble (`flax_s2s.ensemble`; they must share both vocabularies). Sources are decoded in
length-sorted batches (`flax_s2s.infer.decode_hypotheses`, as the decode command does) and
`DIR/{split}.jsonl` holds one JSON object per source: the source in the run's `src_field`, the
teacher's output in its `tgt_field`; with `keep_references`, the field is the list of the output
and the source's references (each once), so the student trains on both. The student reads `DIR`
as `config.task = "parallel_text"`, `config.data_path = DIR`. A source the teacher cannot decode
(too long, say) or decodes to nothing keeps only its references (left out without
`keep_references`); the counts are printed.

The work is cut into fixed shards of `shard_size` sources. Each shard is written beside its
place and renamed into it, and `DIR/distill.json` records the settings and the input's digest,
so a run stopped anywhere (a signal, a crash, `max_shards`) continues where it stopped when run
again with the same settings, skipping the finished shards: no source is decoded twice, written
twice or lost. When every shard is there, they are joined, in input order, into
`DIR/{split}.jsonl` and removed. An existing `DIR` is only ever continued, or replaced with
`overwrite` when it holds nothing but this command's files (`flax_s2s.outputs`' rule).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flax_s2s import outputs
from flax_s2s.data import registry, task_data
from flax_s2s.ensemble import Ensemble
from flax_s2s.infer import InputError, decode_hypotheses
from flax_s2s.workdirs import TrainedModel, WorkdirError, load_workdir

MANIFEST = "distill.json"
SHARD = re.compile(r"shard-\d{5}\.jsonl|\.shard-\d{5}\.jsonl\..*\.partial")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What decides the written dataset; a run continues a `DIR` only with the same."""

    workdirs: tuple[str, ...]
    steps: tuple[int, ...]  # each teacher's checkpoint
    data: str
    split: str
    beam: int
    alpha: float
    keep_references: bool
    shard_size: int
    sources: int
    digest: str  # sha256 of the sources and references, in order


class _Ours:
    """The names this command writes into `DIR` (for `outputs.check_output`)."""

    def __init__(self, split: str) -> None:
        self.names = {MANIFEST, f"{split}.jsonl"}

    def __contains__(self, name: object) -> bool:
        return name in self.names or bool(SHARD.fullmatch(str(name)))


def load_teachers(workdirs: Sequence[str]) -> tuple[TrainedModel, tuple[int, ...]]:
    """(the first workdir's model, or the ensemble of all: `Ensemble`, its variables a tuple;
    each one's checkpoint step); WorkdirError when a member's vocabularies differ from the
    first's."""
    if not workdirs:
        raise WorkdirError("--workdir: name at least one trained workdir")
    members = [load_workdir(workdir) for workdir in workdirs]
    first = members[0]
    for workdir, member in zip(workdirs[1:], members[1:], strict=True):
        for side in ("src_vocab", "tgt_vocab"):
            if getattr(member, side) != getattr(first, side):
                raise WorkdirError(f"--workdir {workdir}: its {side} differs from that of "
                                   f"{workdirs[0]}; an ensemble's members share vocabularies")
    steps = tuple(m.step for m in members)
    if len(members) == 1:
        return first, steps
    return dataclasses.replace(first, model=Ensemble(tuple(m.model for m in members)),
                               variables=tuple(m.variables for m in members)), steps


def read_sources(config: Any, workdir: str, data: str, split: str
                 ) -> tuple[list[str], list[list[str]]]:
    """(sources, their references) of `split` as the run reads it, `data` in place of its
    config.data_path (""; its own): each distinct source once, in order of first appearance."""
    config = config.copy_and_resolve_references()
    if data:
        config.data_path = os.path.abspath(data)
    data_dir = config.data_dir or task_data.default_data_dir(workdir)
    pairs = registry.read_task_texts(config, data_dir, (split,))[split]
    references: dict[str, list[str]] = {}
    for source, target in pairs:
        references.setdefault(source, []).append(target)
    return list(references), list(references.values())


def digest(sources: Sequence[str], references: Sequence[Sequence[str]]) -> str:
    """sha256 of the sources and references, in order."""
    text = json.dumps([list(sources), [list(r) for r in references]], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rows(sources: Sequence[str], references: Sequence[Sequence[str]], teacher: Sequence[str],
         keep_references: bool, fields: tuple[str, str]) -> tuple[list[str], int]:
    """(the JSON lines of a shard, how many sources have no output): one per source with a
    target, the teacher's output ("" where it has none) and, with `keep_references`, the
    references after it, each text once."""
    lines, missing = [], 0
    for source, refs, output in zip(sources, references, teacher, strict=True):
        missing += not output.strip()
        targets = [output] if output.strip() else []
        if keep_references:
            targets = list(dict.fromkeys([*targets, *refs]))
        if not targets:
            continue
        target = targets if keep_references else targets[0]
        lines.append(json.dumps({fields[0]: source, fields[1]: target}, ensure_ascii=False))
    return lines, missing


def shard_path(out: Path, index: int) -> Path:
    return out / f"shard-{index:05d}.jsonl"


def _write_atomically(path: Path, lines: Sequence[str]) -> None:
    """`lines` into `path`, written beside it and renamed into place."""
    partial = path.parent / f".{path.name}.{os.getpid()}.partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def prepare_out(out: Path, settings: Settings, overwrite: bool,
                protected: Sequence[str]) -> bool:
    """Makes `out` ready to (continue to) write into; True when it continues an earlier run
    with these settings. OutputError when `out` may not be written (`flax_s2s.outputs`)."""
    ours = _Ours(settings.split)
    outputs.check_output(out, directory=True, overwrite=True, writes=ours, protected=protected)
    manifest = out / MANIFEST
    if out.is_dir() and any(out.iterdir()):
        final = out / f"{settings.split}.jsonl"
        same = (manifest.is_file() and not final.exists()
                and _read_manifest(manifest) == dataclasses.asdict(settings))
        if same:
            for partial in out.glob(".shard-*.partial"):  # a shard cut short
                partial.unlink()
            return True
        if not overwrite:
            why = ("is complete" if final.exists() else
                   "was started with other settings or input" if manifest.is_file() else "exists")
            raise outputs.OutputError(f"{out} {why}; pass {outputs.OVERWRITE_FLAG} to write it "
                                      "again, or choose another --out")
        for entry in out.iterdir():  # only this command's files (checked above)
            entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    _write_atomically(manifest, [json.dumps(dataclasses.asdict(settings), indent=1)])
    return False


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    # JSON has no tuples
    return {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}


Decode = Callable[[Sequence[str]], list[str]]


def write_shards(out: Path, settings: Settings, sources: Sequence[str],
                 references: Sequence[Sequence[str]], decode: Decode, fields: tuple[str, str],
                 max_shards: int = 0, log: Callable[[str], None] = print) -> bool:
    """Writes each missing shard of `out` (`decode`: sources -> the teacher's output texts);
    with `max_shards` > 0, stops after writing that many. True when all shards are written."""
    size = settings.shard_size
    count = -(-len(sources) // size)
    written = 0
    for index in range(count):
        path = shard_path(out, index)
        if path.exists():
            log(f"shard {index + 1}/{count}: written already")
            continue
        if max_shards and written == max_shards:
            log(f"stopped after {written} shard(s) (--max_shards={max_shards}); run again to "
                "continue")
            return False
        start = time.perf_counter()
        chunk = slice(index * size, (index + 1) * size)
        lines, missing = rows(sources[chunk], references[chunk], decode(sources[chunk]),
                              settings.keep_references, fields)
        _write_atomically(path, lines)
        written += 1
        rate = len(sources[chunk]) / max(time.perf_counter() - start, 1e-9)
        log(f"shard {index + 1}/{count}: {len(sources[chunk])} sources, {missing} without an "
            f"output, {rate:.1f} sources/s; {min((index + 1) * size, len(sources))}/"
            f"{len(sources)} done")
    return True


def join_shards(out: Path, split: str, shards: int) -> Path:
    """The shards of `out`, in order, joined into `out/{split}.jsonl` (renamed into place), then
    removed."""
    final = out / f"{split}.jsonl"
    partial = out / f".{final.name}.{os.getpid()}.partial"
    with open(partial, "w", encoding="utf-8") as f:
        for index in range(shards):
            f.write(shard_path(out, index).read_text(encoding="utf-8"))
    os.replace(partial, final)
    for index in range(shards):
        shard_path(out, index).unlink()
    return final


def distill(workdirs: Sequence[str], out: str, beam: int = 5, data: str = "",
            split: str = "train", keep_references: bool = False, shard_size: int = 10_000,
            batch_size: int = 64, alpha: float | None = None, max_shards: int = 0,
            overwrite: bool = False, log: Callable[[str], None] = print) -> Path | None:
    """Writes (or continues) the distilled dataset `out/{split}.jsonl` (see the module's
    docstring); returns its path, or None when `max_shards` stopped it first. `alpha`: the
    length penalty (default: the first teacher's config.eval_length_alpha). Raises
    WorkdirError, InputError or OutputError naming the problem."""
    for flag, value, least in (("--beam", beam, 1), ("--shard_size", shard_size, 1),
                               ("--batch_size", batch_size, 1), ("--max_shards", max_shards, 0)):
        if value < least:
            raise InputError(f"{flag}={value}: must be >= {least}")
    for workdir in workdirs:
        if not os.path.isdir(workdir):
            raise WorkdirError(f"--workdir {workdir!r} does not exist")
    teacher, steps = load_teachers(workdirs)
    config = teacher.config
    alpha = config.eval_length_alpha if alpha is None else alpha
    sources, references = read_sources(config, workdirs[0], data, split)
    if not sources:
        raise InputError(f"split {split!r} holds no source")
    settings = Settings(tuple(os.path.abspath(w) for w in workdirs), steps,
                        os.path.abspath(data) if data else "", split, beam, float(alpha),
                        keep_references, shard_size, len(sources), digest(sources, references))
    protected = [*workdirs, *([data] if data else [])]
    out_path = Path(out)
    if prepare_out(out_path, settings, overwrite, protected):
        log(f"continuing {out_path}")

    def decode(chunk: Sequence[str]) -> list[str]:
        try:
            found = decode_hypotheses(teacher, chunk, beam, 1, alpha, batch_size=batch_size,
                                      warn=lambda message: print(message, file=sys.stderr))
        except InputError:  # none of the chunk's sources can be decoded: each said why
            return [""] * len(chunk)
        return [h[0].text if h else "" for h in found]

    fields = (config.src_field, config.tgt_field)
    if not write_shards(out_path, settings, sources, references, decode, fields, max_shards, log):
        return None
    final = join_shards(out_path, split, -(-len(sources) // shard_size))
    log(f"wrote {final}: {len(sources)} sources")
    return final


if __name__ == "__main__":  # `python -m flax_s2s.distill` runs the command
    import runpy

    runpy.run_module("flax_s2s.cli.distill", run_name="__main__", alter_sys=True)
