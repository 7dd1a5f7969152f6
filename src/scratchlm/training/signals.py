"""SIGTERM and SIGUSR1 stop training at the next step boundary, after a checkpoint.

SIGTERM is what torchrun, SLURM, Kubernetes and spot instances send before they stop a job (and
SLURM's `--signal=USR1@SECONDS` sends SIGUSR1 as a warning before the end). The default action of
both is to die at once, losing every step since the last checkpoint. While training, the handler
only records the signal; the loop reads the record at its next step boundary, where every rank
agrees (an all-reduce) to stop at the same step, saves a checkpoint there and returns. A second
signal while saving changes nothing (SIGKILL remains the way to stop at once).

Handlers can only be installed from the main thread: elsewhere (a trainer run from a thread of
the Python API) the signals keep their previous behaviour.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

# SIGUSR1 does not exist on Windows.
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name)
)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class StopSignals:
    """Records the first stop signal received between `install()` and `restore()`."""

    def __init__(self, *, interrupt: bool = False) -> None:
        self.received = 0  # the signal's number; 0: none yet
        self._previous: dict[signal.Signals, Any] = {}
        # Under torchrun Ctrl-C reaches every rank at its own moment: as a KeyboardInterrupt each
        # would stop wherever it is, possibly inside a collective the others never enter. As a
        # stop signal the ranks agree on one step, as for SIGTERM. One process keeps Ctrl-C
        # immediate (KeyboardInterrupt mid-step, then a save of the last finished step).
        self._signals = (*STOP_SIGNALS, signal.SIGINT) if interrupt else STOP_SIGNALS

    def install(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in self._signals:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if not self.received:
            self.received = number
