"""The worker metrics' multiprocess folder: one per dramatiq run, stale runs deleted at start."""

from __future__ import annotations

import os
import subprocess
import sys

from lapse.platform import metrics_setup


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_folders_of_finished_runs_are_deleted_and_live_ones_kept(tmp_path):
    dead = tmp_path / f"run-{_dead_pid()}"
    alive = tmp_path / f"run-{os.getppid()}"
    mine = tmp_path / f"run-{os.getpid()}"
    for folder in (dead, alive, mine):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"x")
    (tmp_path / "unrelated").mkdir()
    assert metrics_setup.remove_dead_runs(tmp_path, keep=mine) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, mine.name, "unrelated"])


def test_only_processes_of_the_dramatiq_command_use_a_folder():
    assert metrics_setup.is_dramatiq_process() is False
    assert metrics_setup.RUN_FOLDER is None
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
