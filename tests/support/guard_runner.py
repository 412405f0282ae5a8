"""STYLE rule 12: delete each guard once and watch the test that should catch it fail.

Each ``tests/support/<area>_guards.py`` holds a list of mutations and hands it
to :func:`run`: ``python -m tests.support.<area>_guards [N ...]`` applies each
mutation (or only those numbered N) in turn, runs its test, prints FAILS (good)
or STILL PASSES and restores every file it changed. Not collected by pytest.

A mutation is ``(name, path, old, new, test)``: ``old`` stands exactly once in
``path`` and is replaced by ``new``. ``old`` may instead be a list of
``(old, new)`` pairs applied in turn to the same file (``new`` is then None);
``(name, [(path, old, new), ...], test)`` edits several files. A mutation
whose name says "expected to PASS" shows one guard holding alone while the
others that back it up are off: there a passing test is the good outcome. A
mutation whose name begins with "(the same" is applied together with the one
before it, never alone (run alone, its text is only checked).
"""

from __future__ import annotations

import pathlib
import subprocess
from collections.abc import Sequence
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[2]
PYTEST = (str(ROOT / ".venv/bin/pytest"),)
# The line printed per mutation: {verdict} is ``fails`` or ``passes``, {mark} good or BAD,
# {i} the mutation's number, {test} the test's name, {last} pytest's summary line.
JUDGED = "{verdict} ({mark})  {i} {name}  -> {test}  {last}"


def edits(mutation: Sequence[Any]) -> tuple[str, list[tuple[str, str, str]], str]:
    """The mutation's name, its (path, old, new) edits and its test."""
    if len(mutation) == 3:
        name, changes, test = mutation
        return name, list(changes), test
    name, path, old, new, test = mutation
    pairs = old if isinstance(old, list) else [(old, new)]
    return name, [(path, before, after) for before, after in pairs], test


def run(mutations: Sequence[Sequence[Any]], argv: Sequence[str], *, timeout: float | None = 600,
        pytest: Sequence[str] = PYTEST, fails: str = "FAILS", passes: str = "STILL PASSES",
        line: str = JUDGED) -> None:
    """Apply each mutation (only those numbered in ``argv`` if any), run its test, print a line."""
    chosen = {int(a) for a in argv}
    for i, mutation in enumerate(mutations):
        if chosen and i not in chosen:
            continue
        name, changes, test = edits(mutation)
        if i + 1 < len(mutations) and edits(mutations[i + 1])[0].startswith("(the same"):
            changes += edits(mutations[i + 1])[1]
        originals = {path: (ROOT / path).read_text() for path, _, _ in changes}
        changed = dict(originals)
        for path, old, new in changes:
            assert changed[path].count(old) == 1, (name, path, changed[path].count(old))
            changed[path] = changed[path].replace(old, new)
        if name.startswith("(the same"):
            continue  # applied with the mutation before it
        try:
            for path, text in changed.items():
                (ROOT / path).write_text(text)
            result = subprocess.run([*pytest, "-q", "-x", "-p", "no:cacheprovider", test],
                                    cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                                    check=False)
        finally:
            for path, text in originals.items():
                (ROOT / path).write_text(text)
        last = [out for out in result.stdout.splitlines()
                if " passed" in out or " failed" in out or "error" in out.lower()][-1:]
        good = bool(result.returncode) != ("expected to PASS" in name)
        print(line.format(verdict=fails if result.returncode else passes,
                          mark="good" if good else "BAD", i=i, name=name,
                          test=test.split("::")[-1], last=last), flush=True)
