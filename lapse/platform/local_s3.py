"""The local S3 server of the embedded default: a moto server process under LAPSE_HOME.

Started on first use with no ``LAPSE_S3_ENDPOINT_URL`` and no ``DATABASE_URL``,
detached so it outlives the command (its objects live in its memory), and
stopped by ``lapse embedded stop``. Its port and pid are kept in
``LAPSE_HOME/s3.port`` and ``s3.pid``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lapse.platform.embedded import EmbeddedError, _free_port, _locked, port_answers


def session() -> Any:
    """A boto3 session for the local server: it accepts any credentials, so none need be configured."""
    import boto3

    return boto3.session.Session(aws_access_key_id="lapse-local",
                                 aws_secret_access_key="lapse-local")


def _running_port(home: Path) -> int | None:
    try:
        pid = int((home / "s3.pid").read_text())
        port = int((home / "s3.port").read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return port if port_answers(port) else None


def ensure_running(home: Path) -> str:
    """Start (or find) the local S3 server; return its endpoint URL."""
    with _locked(home):
        port = _running_port(home)
        if port is None:
            port = _free_port()
            log = open(home / "s3.log", "ab")  # noqa: SIM115  handed to the detached child
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()
            _wait_for(port, process)
            (home / "s3.pid").write_text(str(process.pid))
            (home / "s3.port").write_text(str(port))
    return f"http://127.0.0.1:{port}"


def _wait_for(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedError(f"the local S3 server exited with code {process.returncode}")
        if port_answers(port):
            return
        time.sleep(0.1)
    process.kill()
    raise EmbeddedError(f"the local S3 server did not listen on port {port} within {timeout}s")


def stop(home: Path) -> bool:
    """Stop the local S3 server; False when it was not running."""
    with _locked(home):
        if _running_port(home) is None:
            return False
        os.kill(int((home / "s3.pid").read_text()), signal.SIGTERM)
        (home / "s3.pid").unlink()
        return True
