"""Run configs and the tujie CLI: a working run end to end, and one clear line + exit 2 for bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tujie_core import ConfigError, DataError, load_config

GOOD = {
    "name": "tiny",
    "data": {"name": "breast_cancer", "batch_size": 64},
    "model": {"name": "mlp", "hidden": [8]},
    "optimizer": {"name": "adamw", "lr": 0.01},
    "trainer": {"max_epochs": 2, "progress": "plain"},
}


def write(tmp_path: Path, config: dict | str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


def test_train_command_writes_a_complete_run_folder_and_resumes(tmp_path: Path, tujie) -> None:
    config = write(tmp_path, GOOD | {"output_dir": str(tmp_path / "runs")})
    proc = tujie("train", str(config), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "report.md",
        "summary.json",
        "checkpoints/last.ckpt",
        "model/model.safetensors",
        "plots/roc.png",
        "plots/reliability.png",
        "plots/confusion_matrix.png",
    ):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["metrics"]["test/roc_auc"] > 0.9
    assert "test/roc_auc" in proc.stdout

    more = tujie("train", str(config), "--resume", str(run_dir), "--set", "trainer.max_epochs=3", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("data: [unclosed", r"run\.yaml: invalid YAML at line 1, column"),
        ("", r"run\.yaml: the file is empty"),
        (GOOD | {"trainer": {"max_epoch": 2}}, r"trainer\.max_epoch: unknown key \(did you mean 'max_epochs'\?\)"),
        (GOOD | {"trainer": {"max_epochs": "many"}}, r"trainer\.max_epochs: Input should be a valid integer"),
        (GOOD | {"trainer": {"precision": "bf17"}}, r"trainer\.precision: Input should be '32-true'"),
        (GOOD | {"model": {"name": "mlpp"}}, r"model\.name: 'mlpp' is not in the models registry \(did you mean 'mlp'"),
        (GOOD | {"model": {"name": "mlp", "hiden": [3]}}, r"model\.hiden: unknown key \(did you mean 'hidden'"),
        (GOOD | {"model": {"name": "mlp", "dropout": "high"}}, r"model\.dropout: Input should be a valid number"),
        (GOOD | {"model": {"name": "mlp", "num_outputs": 3}}, r"model\.num_outputs: set by the run itself"),
        (GOOD | {"optimizer": {"name": "adamw", "betas": 3}}, r"optimizer\.betas"),
        (GOOD | {"data": {"name": "table", "path": "missing.csv", "target": "y"}}, r"missing\.csv: no such file"),
        ({k: v for k, v in GOOD.items() if k != "model"}, r"model: required key is missing"),
    ],
)
def test_bad_config_prints_one_line_and_exits_2(tmp_path: Path, tujie, config, message: str) -> None:
    proc = tujie("train", str(write(tmp_path, config)), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert re.search(message, lines[0]), lines[0]


def test_missing_config_file_and_bad_override(tmp_path: Path, tujie) -> None:
    proc = tujie("train", "nope.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "nope.yaml: no such file" in proc.stderr
    config = write(tmp_path, GOOD)
    proc = tujie("train", str(config), "--set", "trainer.max_epochs", cwd=tmp_path)
    assert proc.returncode == 2 and "expected KEY=VALUE" in proc.stderr
    proc = tujie("train", str(config), "--resume", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "nothing to resume" in proc.stderr


def test_console_script_help_and_error_exit_code(tmp_path: Path) -> None:
    """The installed ``tujie`` entry point itself, in a fresh process."""
    exe = Path(sys.executable).with_name("tujie")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "train" in proc.stdout and "demo" in proc.stdout
    proc = subprocess.run([str(exe), "demo", "--only", "nosuchpart"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no demo part named nosuchpart" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_load_config_applies_overrides_and_coerces_types(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), ["trainer.max_epochs=7", "optimizer.lr=1e-4", "name=other"])
    assert config.trainer.max_epochs == 7 and config.name == "other"
    assert config.optimizer.params["lr"] == 1e-4
    with pytest.raises(ConfigError, match=r"trainer\.devices"):
        load_config(write(tmp_path, GOOD), ["trainer.devices=[1, 2]"])


def test_demo_core_part_prints_metrics_table(tmp_path: Path, tujie) -> None:
    proc = tujie("demo", "--only", "core", "--quick", "--output-dir", str(tmp_path / "demo"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "test/accuracy" in proc.stdout and "core: digits MLP" in proc.stdout
    (run_dir,) = (tmp_path / "demo" / "digits-mlp").iterdir()
    assert (run_dir / "report.md").is_file() and (run_dir / "plots" / "roc.png").is_file()
    from tujie_core.demo import demo_results

    recorded = demo_results(tmp_path / "demo")
    assert list(recorded) == ["core"] and recorded["core"]["quick"] is True
    assert recorded["core"]["run_dir"] == str(run_dir) and recorded["core"]["seconds"] > 0
    accuracy = recorded["core"]["metrics"]["test/accuracy"]
    assert f"{accuracy:.4f}" in proc.stdout  # the figures printed are the figures kept


def test_demo_results_keep_other_parts_and_reject_a_broken_file(tmp_path: Path) -> None:
    from tujie_core.demo import DemoResult, demo_results, record_result

    assert demo_results(tmp_path) == {}
    record_result(tmp_path, "a", DemoResult("part a", {"m": 1.0}, tmp_path / "a"), 2.0, quick=False)
    record_result(tmp_path, "b", DemoResult("part b", {"m": 2.0}, tmp_path / "b"), 3.0, quick=True)
    record_result(tmp_path, "a", DemoResult("part a", {"m": 5.0}, tmp_path / "a"), 4.0, quick=False)
    results = demo_results(tmp_path)
    assert {k: v["metrics"]["m"] for k, v in results.items()} == {"a": 5.0, "b": 2.0}
    (tmp_path / "demo.json").write_text("{not json")
    with pytest.raises(DataError, match=r"demo\.json"):
        demo_results(tmp_path)
