"""Every package imports, and core's public surface is what the docs say."""

from __future__ import annotations

import importlib
from importlib import metadata

import pytest


@pytest.mark.parametrize("name", ["core", "nlp", "vision", "driving", "health", "privacy"])
def test_package_imports_and_is_installed(name: str) -> None:
    module = importlib.import_module(f"tujie_{name}")
    assert module.__version__ == metadata.version(f"tujie-{name}")


def test_core_registers_its_demo_part_and_console_script() -> None:
    demos = {ep.name: ep.value for ep in metadata.entry_points(group="tujie.demo")}
    assert demos["core"] == "tujie_core.demo:core_demo"
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert scripts["tujie"] == "tujie_core.cli:main"
