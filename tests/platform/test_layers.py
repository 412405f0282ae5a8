"""The package's layers (SPEC §7 Layout, STYLE.md 1): each imports only the layers below it.

operator → schedules → actors → flows → ports → domain → platform. Every
import is checked, including those inside functions, so a lazy import cannot
hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["lapse.platform", "domain", "lapse.ports", "lapse.flows", "actors", "schedules",
          "lapse.operator"]


def layer_of(module: str) -> int | None:
    for rank, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def upward_imports(module: str, source: str) -> list[str]:
    own = layer_of(module)
    assert own is not None, f"{module} is in no layer"
    return [f"{module}:{line} imports {target} (layer {LAYERS[layer]})"
            for line, target in imports_of(source)
            if (layer := layer_of(target)) is not None and layer > own]


SOURCES = sorted([*ROOT.glob("lapse/*/**/*.py"), *ROOT.glob("domain/**/*.py"),
                  *ROOT.glob("actors/**/*.py"), ROOT / "schedules.py"])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_imports_only_layers_below_it(path: Path) -> None:
    assert upward_imports(module_name(path), path.read_text()) == []


def test_the_check_sees_an_upward_import_inside_a_function() -> None:
    source = "import domain\n\ndef f():\n    from lapse.flows import sweeps\n"
    assert upward_imports("lapse.platform.probe", source) == [
        "lapse.platform.probe:1 imports domain (layer domain)",
        "lapse.platform.probe:4 imports lapse.flows (layer lapse.flows)",
        "lapse.platform.probe:4 imports lapse.flows.sweeps (layer lapse.flows)"]


def test_every_lapse_module_is_in_a_layer() -> None:
    loose = [p.name for p in (ROOT / "lapse").glob("*.py") if p.name != "__init__.py"]
    assert loose == []
