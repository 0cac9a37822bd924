"""One trainer per workdir: a lock file, `WORKDIR/trainer.lock`, taken before anything is prepared.

The file holds its holder (host, pid, start time). A second trainer on the same workdir fails at
once with a message naming the holder, instead of racing the first through data preparation and
writing checkpoints into the same directory. A lock whose holder is gone (a pid that no longer
runs on this host, as after `kill -9`) is taken over with a warning; one held from another host
cannot be checked from here, so it is refused with the way to clear it.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from typing import Any

from flax_s2s.errors import ConfigError

LOCK_FILE = "trainer.lock"


class WorkdirInUseError(ConfigError):
    """Another trainer holds the workdir; the message names it."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def _read(path: str) -> dict[str, Any] | None:
    """The holder written in a lock file, or None when the file is unreadable (its writer died
    between creating and writing it)."""
    try:
        with open(path, encoding="utf-8") as f:
            holder = json.load(f)
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and {"host", "pid"} <= holder.keys() else None


def acquire(workdir: str, warn=lambda message: print(message, file=sys.stderr)) -> str:
    """Takes the workdir's lock for this process; returns the lock file's path. Raises
    WorkdirInUseError when a live trainer holds it."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    me = {"host": socket.gethostname(), "pid": os.getpid(),
          "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    for _ in range(2):  # a second try after taking over a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = _read(path)
            if holder is None:
                warn(f"warning: {path} is unreadable (a trainer that died while taking it); "
                     "taking it over")
            elif holder["host"] != me["host"]:
                raise WorkdirInUseError(
                    f"{workdir} is in use by a trainer on host {holder['host']} (pid "
                    f"{holder['pid']}, started {holder.get('started')}), lock file {path}: stop "
                    "it first, or delete the file if that trainer is gone"
                ) from None
            elif _alive(int(holder["pid"])):
                raise WorkdirInUseError(
                    f"{workdir} is in use by a trainer: pid {holder['pid']} on this host, started "
                    f"{holder.get('started')} (lock file {path}); stop it first, or train in "
                    "another workdir"
                ) from None
            else:
                warn(f"warning: taking over the stale lock of pid {holder['pid']} (started "
                     f"{holder.get('started')}, no longer running) on {workdir}")
            os.remove(path)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
        return path
    raise WorkdirInUseError(f"{workdir}: another trainer took the lock {path} at the same moment")


def release(path: str) -> None:
    """Removes the lock file if this process still holds it."""
    holder = _read(path)
    if holder is not None and holder["pid"] == os.getpid() and holder["host"] == socket.gethostname():
        os.remove(path)
