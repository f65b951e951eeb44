"""Domain packages import from tujie_core only what its extension API promises (tujie_core.api)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import tujie_core
from tujie_core.api import EXTENSION_API

ROOT = Path(__file__).resolve().parents[1]
DOMAIN_SOURCES = sorted(p for p in (ROOT / "packages").glob("*/src/tujie_*/**/*.py") if "tujie_core" not in p.parts)


def core_imports(path: Path) -> list[tuple[str, str, int]]:
    """(module, name, line) for every import of tujie_core in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tujie_core"):
            found += [(node.module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.startswith("tujie_core.")]
    return found


def test_domain_packages_use_only_the_extension_api() -> None:
    assert DOMAIN_SOURCES, "no domain package sources found"
    outside = []
    for path in DOMAIN_SOURCES:
        for module, name, line in core_imports(path):
            allowed = tujie_core.__all__ if module == "tujie_core" else EXTENSION_API.get(module, ())
            if name not in allowed:
                outside.append(f"{path.relative_to(ROOT)}:{line}: {module}.{name or '*'}")
    assert not outside, "imports outside tujie_core's extension API:\n" + "\n".join(outside)


@pytest.mark.parametrize("module", sorted(EXTENSION_API))
def test_every_promised_name_exists(module: str) -> None:
    loaded = importlib.import_module(module)
    missing = [name for name in EXTENSION_API[module] if not hasattr(loaded, name)]
    assert not missing


def test_the_public_names_exist() -> None:
    assert all(hasattr(tujie_core, name) for name in tujie_core.__all__)
