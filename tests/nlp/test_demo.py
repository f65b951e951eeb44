"""The NLP part of ``tujie demo`` runs on the bundled tickets with the real MiniLM, offline."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import tujie_nlp


def test_nlp_registers_its_cli_and_demo_and_exports_resolve() -> None:
    assert {ep.name: ep.value for ep in metadata.entry_points(group="tujie.cli")}["nlp"] == "tujie_nlp.cli:app"
    assert {ep.name: ep.value for ep in metadata.entry_points(group="tujie.demo")}["nlp"] == "tujie_nlp.demo:nlp_demo"
    for name in tujie_nlp.__all__:
        assert getattr(tujie_nlp, name) is not None


def test_demo_nlp_part_trains_compresses_and_explains(tujie, tmp_path: Path) -> None:
    proc = tujie("demo", "--only", "nlp", "--quick", "--output-dir", str(tmp_path / "demo"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for metric in ("test/accuracy", "int8 throughput ×", "wall time (s)"):
        assert metric in proc.stdout
    (run_dir,) = (tmp_path / "demo" / "tickets").iterdir()
    for name in ("report.md", "model/model.safetensors", "compression/compression.md", "explanation.png"):
        assert (run_dir / name).is_file(), name
    accuracy = json.loads((run_dir / "summary.json").read_text())["metrics"]["test/accuracy"]
    assert accuracy > 0.5  # four teams: chance is 0.25
    rows = json.loads((run_dir / "compression" / "compression.json").read_text())
    assert [r["method"] for r in rows] == ["fp32", "int8"] and rows[1]["size_mb"] < rows[0]["size_mb"]
