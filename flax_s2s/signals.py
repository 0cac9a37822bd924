"""Graceful stops: SIGTERM or SIGINT asks the training loop to finish its step, save and exit 0.

Preemptible machines send SIGTERM before they take the machine away; a user presses Ctrl-C. Either
way the run should lose nothing. A second signal means "now": the process exits at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType


class GracefulStop:
    """Context manager: while active, the first SIGTERM/SIGINT sets `requested` (and `signal_name`)
    instead of killing the process; a second one exits immediately with 128 + signal number."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        name = signal.Signals(signum).name
        if self.requested:
            print(f"second {name}: exiting now without saving", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.requested, self.signal_name = True, name
        print(f"{name} received: finishing the current step, then saving a checkpoint "
              "(send it again to exit at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> GracefulStop:
        # Signal handlers can only be installed from the main thread (not e.g. in a test worker).
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
