"""Shared set-up of the benchmarks: a fresh migrated database on the configured server."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import psycopg

ROOT = Path(__file__).resolve().parent.parent


def server_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from lapse.platform import embedded

    return embedded.ensure_running(Path(os.environ.get("LAPSE_HOME", ROOT / ".lapse")).resolve())


def fresh_database(name: str) -> str:
    """Drop and create ``name`` on the server, migrate it, return its URL."""
    from lapse.platform import migrate

    base = urlparse(server_url())
    admin = urlunparse(base._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    url = urlunparse(base._replace(path=f"/{name}"))
    with psycopg.connect(url) as conn:
        migrate.migrate(conn)
    return url


def timed(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Best wall time of ``repeat`` runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def peak_rss_mb_of(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run a child Python process; return its peak RSS (MB) and stdout."""
    result = subprocess.run([sys.executable, *args], env=os.environ | env, cwd=ROOT,
                            capture_output=True, text=True, check=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_maxrss / 1024, result.stdout


@contextmanager
def report(title: str) -> Any:
    print(f"## {title}")
    yield
    print()
