"""Graceful stops: SIGTERM or SIGINT asks the training loop to finish its step, save and exit 0.

Preemptible machines send SIGTERM before they take the machine away; a user presses Ctrl-C. Either
way the run should lose nothing. A second signal means "now": the process exits at once, even
while the main thread is inside a long call into compiled code (an XLA compile), where Python
runs no signal handler until the call returns: Python's own C-level handler writes each signal's
number to a pipe at once (`signal.set_wakeup_fd`), and a watcher thread reading it acts on it.
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
        self._pipe: tuple[int, int] | None = None
        self._previous_wakeup = -1
        self._watcher: threading.Thread | None = None

    def _received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            print(f"second {name}: exiting now without saving", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.requested, self.signal_name = True, name
        print(f"{name} received: finishing the current step, then saving a checkpoint "
              "(send it again to exit at once)", file=sys.stderr, flush=True)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """The Python-level handler; the watcher has acted on the signal already."""
        del signum, frame

    def _watch(self, read_fd: int) -> None:
        """Reads the signal numbers Python's C handler writes, as they come; ends when the
        pipe closes."""
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in self.SIGNALS:
                    self._received(signum)

    def __enter__(self) -> GracefulStop:
        # Signal handlers can only be installed from the main thread (not e.g. in a test worker).
        if threading.current_thread() is threading.main_thread():
            read_fd, write_fd = os.pipe()
            os.set_blocking(write_fd, False)  # set_wakeup_fd requires it
            self._pipe = (read_fd, write_fd)
            self._previous_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
            self._watcher = threading.Thread(target=self._watch, args=(read_fd,), daemon=True,
                                             name="graceful-stop")
            self._watcher.start()
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self._pipe is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            read_fd, write_fd = self._pipe
            os.close(write_fd)  # the watcher reads the end of the pipe and returns
            self._watcher.join(timeout=5)
            os.close(read_fd)
            self._pipe = self._watcher = None
