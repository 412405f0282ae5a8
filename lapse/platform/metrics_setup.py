"""The multiprocess folder of a ``dramatiq`` worker's Prometheus metrics, prepared before any metric exists.

prometheus_client decides at import time whether values live in memory or in
files of ``PROMETHEUS_MULTIPROC_DIR`` (one per process, summed at scrape), so
the ``actors`` package imports this module first. Only processes of the
``dramatiq`` command take part (not ``periodiq`` or ``lapse``), and only when
LAPSE_METRICS_PORT is not 0.

Each run of ``dramatiq`` gets its own folder, ``<LAPSE_METRICS_DIR>/run-<pid
of the dramatiq main process>``: a new run starts with an empty folder, and
the folders of runs whose main process is gone are deleted when a run starts
(Dramatiq's "the folder must be cleared at start": stale files of a previous
run would otherwise be summed into the counters).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from lapse.platform.config import settings

_RUN = "run-"


def base_folder() -> Path:
    return settings().metrics_dir or Path(tempfile.gettempdir()) / "lapse-prometheus"


def is_dramatiq_process() -> bool:
    return Path(sys.argv[0]).name == "dramatiq"


def prepare() -> Path | None:
    """Point prometheus_client and Dramatiq at this run's folder; None when metrics are off here."""
    if not is_dramatiq_process() or not settings().metrics_port:
        return None
    base = base_folder()
    run = base / f"{_RUN}{os.getppid()}"
    run.mkdir(parents=True, exist_ok=True)
    remove_dead_runs(base, keep=run)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(run)
    os.environ["dramatiq_prom_db"] = str(run)  # noqa: SIM112  (Dramatiq spells it so)
    return run


def remove_dead_runs(base: Path, *, keep: Path) -> list[Path]:
    """Delete the run folders whose dramatiq main process no longer exists."""
    removed = []
    for folder in base.glob(f"{_RUN}*"):
        pid = folder.name.removeprefix(_RUN)
        if folder == keep or not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


#: This process's folder, or None outside a dramatiq worker with metrics on.
RUN_FOLDER = prepare()
