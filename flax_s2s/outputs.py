"""The rule every command that writes an output path follows: nothing it did not write is
deleted or overwritten.

```
check_output("exports/t5_ft", overwrite=False, writes=NAMES, protected=[workdir, reference])
with writing_directory("exports/t5_ft", writes=NAMES, protected=[...]) as partial:
    ...                                   # write the files into `partial`
with writing_file("addition.s2s", ours=is_export_file) as partial:
    ...                                   # write the file `partial`
```
An output is written beside itself (a temporary name in the same directory) and renamed into
place, so a reader never sees half of it, and a failed write leaves nothing behind (the temporary
copy and any directories made for it are removed). An existing output is refused unless
`overwrite`; even then it is replaced only when it holds nothing but what the command writes
(`writes`, or `ours` for a file), and never when it is a training workdir (it holds one of
`WORKDIR_MARKERS`), one of the command's inputs (`protected`), or a directory that holds either.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence

# What a training workdir holds from its first run (see flax_s2s/workdirs.py, workdir_lock.py).
WORKDIR_MARKERS = ("checkpoints", "metrics.jsonl", "trainer.lock")
OVERWRITE_FLAG = "--overwrite"

Path = str | os.PathLike


class OutputError(ValueError):
    """An output path that may not be written; the message names it and the way out."""


def is_workdir(path: Path) -> bool:
    """Whether `path` is a directory holding one of a training workdir's `WORKDIR_MARKERS`."""
    return os.path.isdir(path) and any(
        os.path.lexists(os.path.join(path, name)) for name in WORKDIR_MARKERS)


def _held(directory: str, paths: Sequence[str]) -> str | None:
    """The first of `paths` that is `directory` or lies under it, else None."""
    for path in paths:
        if path == directory or path.startswith(directory.rstrip(os.sep) + os.sep):
            return path
    return None


def _workdir_in(directory: str) -> str | None:
    """`directory` when it is a training workdir, else the first of its subdirectories that is
    one, else None (deeper ones are refused as subdirectories the command does not write)."""
    if is_workdir(directory):
        return directory
    with os.scandir(directory) as entries:
        return next((entry.path for entry in sorted(entries, key=lambda e: e.name)
                     if is_workdir(entry.path)), None)


def _never_replaced(out: str, protected: Sequence[Path]) -> str | None:
    """Why the existing `out` is never replaced, even with --overwrite; None when it may be."""
    real = os.path.realpath(out)
    if os.path.isdir(real):
        workdir = _workdir_in(real)
        if workdir is not None:
            what = "is" if workdir == real else f"holds {workdir}, which is"
            return f"{out} {what} a training workdir"
    held = _held(real, [os.path.realpath(p) for p in protected if p])
    if held is not None:
        what = "is" if held == real else f"holds {held}, which is"
        return f"{out} {what} an input of this command"
    return None


def check_output(
    out: Path, *, directory: bool, overwrite: bool = False,
    writes: Collection[str] | None = None, ours: Callable[[pathlib.Path], bool] | None = None,
    protected: Sequence[Path] = (),
) -> pathlib.Path:
    """`out` as a Path when the command may write it (absent, an empty directory, or with
    `overwrite` an earlier output of the command), else OutputError naming it and the way out.

    directory: whether the output is a directory (else a file). writes: the names a directory
    output holds. ours: whether an existing file is an earlier output of the command.
    protected: the command's inputs (workdirs, reference directories), never replaced."""
    out = pathlib.Path(out)
    if not os.path.lexists(out):
        return out
    reason = _never_replaced(str(out), protected)
    if reason is not None:
        raise OutputError(f"{reason}; it is never replaced, even with {OVERWRITE_FLAG}: "
                          "choose another --out")
    if out.is_dir() != directory or out.is_symlink():
        kind = "directory" if directory else "file"
        raise OutputError(f"{out} exists and is not a {kind}; --out names the {kind} to write: "
                          "choose another --out")
    if directory and not any(out.iterdir()):
        return out  # an empty directory: nothing to lose
    if not overwrite:
        raise OutputError(f"{out} exists; pass {OVERWRITE_FLAG} to replace it, or choose "
                          "another --out")
    foreign = _foreign(out, directory, writes, ours)
    if foreign is not None:
        raise OutputError(f"{out} holds {foreign}, which this command does not write; it is not "
                          f"replaced, even with {OVERWRITE_FLAG}: choose another --out")
    return out


def _foreign(out: pathlib.Path, directory: bool, writes: Collection[str] | None,
             ours: Callable[[pathlib.Path], bool] | None) -> str | None:
    """What in the existing `out` the command did not write, else None."""
    if directory:
        for entry in sorted(out.iterdir()):
            if writes is None or entry.name not in writes or not entry.is_file():
                return str(entry)
        return None
    return None if ours is None or ours(out) else "other contents (not an earlier output)"


@contextlib.contextmanager
def _made_parents(out: pathlib.Path) -> Iterator[None]:
    """Creates `out`'s missing parent directories; removes them again when the block fails."""
    missing = [p for p in reversed(out.absolute().parents) if not p.exists()]
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for parent in reversed(missing):
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


@contextlib.contextmanager
def writing_directory(
    out: Path, *, overwrite: bool = False, writes: Collection[str] | None = None,
    protected: Sequence[Path] = (),
) -> Iterator[pathlib.Path]:
    """Yields an empty temporary directory beside `out` to write the output into; when the block
    ends it takes `out`'s place (checked by `check_output` before and again at the rename). A
    block that fails removes it and leaves `out` as it was."""
    out = check_output(out, directory=True, overwrite=overwrite, writes=writes,
                       protected=protected)
    with _made_parents(out):
        partial = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial",
                                                dir=out.absolute().parent))
        try:
            yield partial
            check_output(out, directory=True, overwrite=overwrite, writes=writes,
                         protected=protected)
            _replace(partial, out)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise


def _replace(partial: pathlib.Path, out: pathlib.Path) -> None:
    """Renames the directory `partial` to `out`, moving a checked `out` aside first and
    deleting it only once the new one is in place."""
    if not os.path.lexists(out):
        os.rename(partial, out)
        return
    old = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=partial.parent))
    os.rename(out, old / out.name)
    try:
        os.rename(partial, out)
    except BaseException:
        os.rename(old / out.name, out)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def writing_file(
    out: Path, *, overwrite: bool = False, ours: Callable[[pathlib.Path], bool] | None = None,
    protected: Sequence[Path] = (),
) -> Iterator[pathlib.Path]:
    """Yields a temporary file name beside `out` to write the output to; when the block ends it
    replaces `out` atomically (checked by `check_output` before and again at the rename). A block
    that fails removes it and leaves `out` as it was."""
    out = check_output(out, directory=False, overwrite=overwrite, ours=ours, protected=protected)
    with _made_parents(out):
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial",
                                    dir=out.absolute().parent)
        os.close(fd)
        partial = pathlib.Path(name)
        try:
            yield partial
            check_output(out, directory=False, overwrite=overwrite, ours=ours,
                         protected=protected)
            os.replace(partial, out)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
