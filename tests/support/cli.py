"""Run the real ``lapse`` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from tests.conftest import ROOT


def lapse(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "lapse.operator.cli", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout, check=False)
