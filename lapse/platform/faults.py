"""Named fault points for the crash tests (M5): SIGKILL this process at a named step.

Off unless ``LAPSE_FAULT_POINT`` is set (only the crash tests set it). Each
point passed is appended to ``LAPSE_FAULT_LOG`` first, so a test can prove
the run really reached the point where it was killed.
"""

from __future__ import annotations

import os
import signal

_POINT = os.environ.get("LAPSE_FAULT_POINT")
_LOG = os.environ.get("LAPSE_FAULT_LOG")


def fault_point(name: str) -> None:
    """Die here (SIGKILL, no clean-up) when ``LAPSE_FAULT_POINT`` names this point."""
    if _POINT is None:
        return
    if _LOG:
        with open(_LOG, "a") as log:
            log.write(name + "\n")
    if name == _POINT:
        os.kill(os.getpid(), signal.SIGKILL)
