"""Stopping the worker and scheduler processes a test started, each in its own session."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterable


def stop_process_groups(processes: Iterable[subprocess.Popen[bytes]], *, grace: float) -> None:
    """SIGTERM every still-running group, wait ``grace`` seconds for each, then SIGKILL."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
