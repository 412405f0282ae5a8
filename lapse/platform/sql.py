"""Named SQL blocks loaded once from ``.sql`` files next to the code that runs them.

A file holds blocks introduced by ``-- name: <block>`` lines, as procrastinate
does; parameters are named (``%(now)s``).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


@cache
def load(path: str | Path) -> dict[str, str]:
    """Return the named blocks of one SQL file."""
    text = Path(path).read_text()
    parts = _HEADER.split(text)
    blocks = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    if not blocks:
        raise ValueError(f"{path}: no '-- name:' blocks")
    return blocks


def queries(module_file: str, stem: str) -> dict[str, str]:
    """The blocks of ``sql/<stem>.sql`` beside the module whose ``__file__`` is given."""
    return load(Path(module_file).parent / "sql" / f"{stem}.sql")
