"""Starting the worker and scheduler processes of a test, each in its own session, and stopping them."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.conftest import ROOT


def spawn(args: Sequence[str], env: dict[str, str], log: str | Path) -> subprocess.Popen[bytes]:
    """Start ``args`` in the project folder in a new session, stdout and stderr into ``log``."""
    with open(log, "wb") as handle:
        return subprocess.Popen(list(args), cwd=ROOT, env=env, stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True)


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
