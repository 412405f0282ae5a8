"""Time ``lapse demo`` and say what it would take on a quiet machine.

    .venv/bin/python bench/demo_time.py --users 200 --days 7
    .venv/bin/python bench/demo_time.py                 # the default 2,000 users, 30 days

The demo is one sequential pipeline: the simulation asks PostgreSQL, the local
S3 server or a fake, and waits for the answer. So its wall time on a quiet
machine is close to the CPU time all of them spend: the demo process (with the
fakes' threads), the embedded PostgreSQL (its postmaster's own and its reaped
backends' CPU) and the local S3 server. This script runs the demo on the
embedded default (no DATABASE_URL, LAPSE_HOME=./.lapse), reads those CPU
counters from /proc before and after, and prints the wall time next to the
CPU sum (the anchor, measured in the same run) and their ratio: a ratio well
above 1 means the run waited for a busy machine, not for work.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """A process's CPU, its threads' and its reaped children's (utime, stime, cutime, cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICK


def pid_of(path: Path) -> int:
    return int(path.read_text().split()[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", default="2000")
    parser.add_argument("--days", default="30")
    parser.add_argument("--seed", default="7")
    args = parser.parse_args()
    home = ROOT / ".lapse"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"LAPSE_HOME": str(home), "LAPSE_ALLOW_CLOCK_OVERRIDE": "1"}
    lapse = [sys.executable, "-m", "lapse.operator.cli"]
    subprocess.run([*lapse, "embedded", "url"], cwd=ROOT, env=env, check=True,
                   capture_output=True)  # start it outside the measurement
    demo = [*lapse, "demo", "--users", args.users, "--days", args.days, "--seed", args.seed,
            "--json"]
    postgres = pid_of(home / "pgdata" / "postmaster.pid")
    s3 = pid_of(home / "s3.pid") if (home / "s3.pid").exists() else None
    before = (cpu_seconds(postgres), cpu_seconds(s3) if s3 else 0.0)
    started = time.monotonic()
    result = subprocess.run(demo, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    s3 = pid_of(home / "s3.pid") if (home / "s3.pid").exists() else s3
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    demo_cpu = usage.ru_utime + usage.ru_stime
    postgres_cpu = cpu_seconds(postgres) - before[0]
    s3_cpu = (cpu_seconds(s3) - before[1]) if s3 else 0.0
    total = demo_cpu + postgres_cpu + s3_cpu
    print(f"lapse demo --users {args.users} --days {args.days} --seed {args.seed}: "
          f"exit {result.returncode}")
    print(f"  wall time                      {wall:7.1f} s")
    print(f"  CPU: demo process (and fakes)  {demo_cpu:7.1f} s")
    print(f"  CPU: embedded PostgreSQL       {postgres_cpu:7.1f} s")
    print(f"  CPU: local S3 server           {s3_cpu:7.1f} s")
    print(f"  CPU sum (anchor)               {total:7.1f} s")
    print(f"  wall / CPU sum                 {wall / total:7.2f}x")
    print("  load average at the end        " + " ".join(Path("/proc/loadavg").read_text().split()[:3]))
    if result.returncode != 0:
        print(result.stderr[-2000:])


if __name__ == "__main__":
    main()
