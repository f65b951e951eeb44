"""`tujie tune` and `tujie compress` end to end, and their bad-input errors (one line, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tujie_core import ConfigError, RunConfig, load_config, train_from_config
from tujie_core import run as supervised_run_module
from tujie_core.runs import compress_run

CONFIGS = Path(__file__).parents[2] / "packages" / "core" / "src" / "tujie_core" / "configs"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("digits")
    config = RunConfig.model_validate(
        {
            "name": "digits",
            "output_dir": str(tmp),
            "data": {"name": "digits", "batch_size": 64},
            "model": {"name": "mlp", "hidden": [64, 32], "dropout": 0.0},
            "optimizer": {"name": "adamw", "lr": 0.005},
            "trainer": {
                "max_epochs": 12,
                "progress": "none",
                "accelerator": "cpu",
                "monitor": "val/accuracy",
                "mode": "max",
            },
        }
    )
    return train_from_config(config).run_dir


@pytest.fixture(scope="module")
def diabetes_run(tmp_path_factory) -> Path:
    config = RunConfig.model_validate(
        {
            "name": "diabetes",
            "output_dir": str(tmp_path_factory.mktemp("diabetes")),
            "data": {"name": "diabetes", "batch_size": 64},
            "model": {"name": "mlp", "hidden": [16], "dropout": 0.0},
            "trainer": {"max_epochs": 2, "progress": "none", "accelerator": "cpu"},
        }
    )
    return train_from_config(config).run_dir


def test_tune_command_writes_a_loadable_best_config(tmp_path: Path, tujie) -> None:
    raw = yaml.safe_load((CONFIGS / "digits_tune.yaml").read_text())
    raw["output_dir"] = str(tmp_path / "runs")
    raw["trainer"]["max_epochs"] = 2
    raw["tune"]["pruner"] = {"name": "none"}
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = tujie("tune", str(config), "--trials", "3", "--workers", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "runs" / "digits-tune" / "tune"
    assert "3 complete, 0 pruned, 0 failed" in result.stdout
    best = load_config(folder / "best.yaml")
    assert best.tune is None and best.trainer.max_epochs == 2
    for name in ("trials.csv", "history.png", "importance.png", "tune.md"):
        assert (folder / name).is_file(), name


def test_tune_command_errors(tmp_path: Path, tujie) -> None:
    raw = yaml.safe_load((CONFIGS / "digits_tune.yaml").read_text())
    raw["tune"]["space"] = {}
    config = tmp_path / "empty.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = tujie("tune", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "empty search space" in result.stderr and "Traceback" not in result.stderr
    result = tujie("tune", str(CONFIGS / "digits_tune.yaml"), "--set", "tune.sampler.name=annealing", cwd=tmp_path)
    assert result.returncode == 2 and "annealing" in result.stderr


def test_compress_run_measures_every_method_and_updates_the_report(digits_run: Path) -> None:
    result = compress_run(digits_run, ["prune", "lowrank", "int8", "onnx", "distil"], fine_tune_epochs=1)
    rows = {row.method: row for row in result.rows}
    assert list(rows) == ["fp32", "prune", "lowrank", "int8", "onnx", "distil"]
    base = rows["fp32"]
    assert base.metric > 0.9
    assert rows["prune"].nonzero < 0.6 * base.nonzero
    # per-channel scales and zero points cost 16 bytes per output channel: on 6,570 weights int8 is ~2× smaller
    assert rows["int8"].size_mb < 0.6 * base.size_mb and abs(rows["int8"].metric - base.metric) <= 0.01
    assert rows["onnx"].metric == pytest.approx(base.metric)
    assert rows["distil"].parameters < base.parameters / 2
    stored = json.loads((result.output_dir / "compression.json").read_text())
    assert [row["method"] for row in stored] == list(rows)
    report = (digits_run / "report.md").read_text()
    assert report.count("## Compression") == 1 and "| int8 |" in report
    compress_run(digits_run, ["int8"])  # a second run replaces the section instead of appending another
    report = (digits_run / "report.md").read_text()
    assert report.count("## Compression") == 1 and "| prune |" not in report


def test_compress_command_and_its_errors(digits_run: Path, tmp_path: Path, tujie) -> None:
    result = tujie(
        "compress",
        str(digits_run),
        "--methods",
        "prune-structured",
        "--set",
        "prune-structured.amount=0.5",
        "--fine-tune-epochs",
        "0",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "| prune-structured |" in result.stdout and "50% of each" in result.stdout
    assert "fine-tuned" not in result.stdout  # 0 epochs: no fine-tuning at all
    cases = {
        ("--methods", "prune,int9"): "int9",
        ("--methods", "prune", "--set", "prune.amount=1.5"): "amount must be in [0, 1)",
        ("--methods", "prune", "--set", "prune.amout=0.5"): "amout",
        ("--methods", "prune", "--set", "int8.x=1"): "--set int8",
    }
    for args, message in cases.items():
        result = tujie("compress", str(digits_run), *args, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    result = tujie("compress", str(tmp_path / "missing"), cwd=tmp_path)
    assert result.returncode == 2 and "not a finished run folder" in result.stderr


@pytest.mark.parametrize(
    ("methods", "kwargs", "message"),
    [
        (["prune", "int9"], {}, r"'int9' is not in the compressors registry"),
        (["prune"], {"options": {"prune": {"amout": 0.5}}}, r"compress\.prune\.amout: unknown key"),
        (["int8"], {"options": {"int8": {"x": 1}}}, r"compress\.int8\.x: unknown key"),
        (["lowrank"], {"options": {"lowrank": {"rank": "low"}}}, r"compress\.lowrank\.rank: "),
        (["int8"], {"options": {"prune": {"amount": 0.5}}}, r"compress\.prune: options for a method that is not run"),
        (["int8", "qat"], {"fine_tune_epochs": 0}, r"compress\.qat: .*needs fine_tune_epochs ≥ 1"),
        (["distil"], {"student": {"hiden": [8]}}, r"compress\.student\.hiden: unknown key"),
        (["int8"], {"student": {"hidden": [8]}}, r"compress\.student: .*distil is not run"),
    ],
)
def test_compress_run_checks_every_name_and_option_before_any_work(
    digits_run: Path, monkeypatch, methods: list[str], kwargs: dict, message: str
) -> None:
    def no_work(*args, **kwargs):
        raise AssertionError("compression work started before the request was checked")

    monkeypatch.setattr(supervised_run_module, "loaders", no_work)
    with pytest.raises(ConfigError, match=message):
        compress_run(digits_run, methods, **kwargs)


def test_compress_run_leaves_distillation_out_of_a_regression_run(diabetes_run: Path, monkeypatch) -> None:
    result = compress_run(diabetes_run, fine_tune_epochs=0)
    assert [row.method for row in result.rows] == ["fp32", "prune", "lowrank", "int8"]
    assert result.rows[0].metric_name == "r2"
    assert result.notes == ["distil left out: distillation needs a classification run."]
    assert result.notes[0] in (result.output_dir / "compression.md").read_text()
    monkeypatch.setattr(supervised_run_module, "loaders", None)  # asked for explicitly: refused before any work
    with pytest.raises(ConfigError, match=r"compress\.distil: distillation needs a classification run"):
        compress_run(diabetes_run, ["int8", "distil"])
