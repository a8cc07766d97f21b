"""A run cut short: SIGTERM handled like Ctrl-C, and the words for why a run did not finish.

pytest handles Ctrl-C itself: the session finishes, the files are written.
SIGTERM (a CI job's time limit, torchrun stopping the job after a rank died)
kills the process by default, so nothing would be written. While the plugin
has something to write (a file, or a torchrun rank's measurements), it turns
the first SIGTERM into the ``KeyboardInterrupt`` pytest handles for Ctrl-C:
the session finishes and every file says the run is incomplete, and why.
Once the session is finishing, a SIGTERM is only noted: the files are being
written (:attr:`SigtermGuard.signals` counts them: a SIGTERM while rank 0
waits for the other ranks ends that wait). The handler is installed from the main thread only, and only where
SIGTERM has its default action (a handler the suite or another plugin
installed is left alone); it is removed at unconfigure.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest

__all__ = ["SigtermGuard", "stop_reason"]


class SigtermGuard:
    """Turns SIGTERM into ``KeyboardInterrupt("SIGTERM")`` until :attr:`finishing` is set."""

    def __init__(self) -> None:
        self.signals = 0  # SIGTERMs received
        self.finishing = False
        self._previous: Any = None
        self._installed = False

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
            return False
        try:
            if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
                return False
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except (ValueError, OSError):  # pragma: no cover - not the main interpreter
            return False
        self._installed = True
        return True

    def uninstall(self) -> None:
        if not self._installed:
            return
        self._installed = False
        try:
            if signal.getsignal(signal.SIGTERM) == self._handle:
                signal.signal(signal.SIGTERM, self._previous)
        except (ValueError, OSError):  # pragma: no cover
            pass

    @property
    def received(self) -> bool:
        return self.signals > 0

    def _handle(self, signum: int, frame: Any) -> None:
        self.signals += 1
        if not self.finishing:
            raise KeyboardInterrupt("SIGTERM")


def stop_reason(excinfo: pytest.ExceptionInfo[BaseException], sigterm: bool) -> str:
    """Why pytest reported an interruption, in the words the files and the report use."""
    value = excinfo.value
    if sigterm and isinstance(value, KeyboardInterrupt) and str(value) == "SIGTERM":
        return "the run was stopped by SIGTERM"
    if isinstance(value, pytest.exit.Exception):
        return f"pytest.exit() was called: {value.msg}" if value.msg else "pytest.exit() was called"
    if type(value) is not KeyboardInterrupt and str(value):  # pytest's Session.Interrupted: "1 error during ..."
        return f"the run was interrupted: {value}"
    return "the run was interrupted (Ctrl-C)"
