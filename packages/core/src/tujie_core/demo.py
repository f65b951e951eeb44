"""``tujie demo``: each installed package contributes a part through the ``tujie.demo`` entry-point group."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from tujie_core.errors import DataError
from tujie_core.runs import load_config


@dataclass
class DemoResult:
    """What one demo part shows: its headline metrics and the folder it wrote."""

    name: str
    metrics: dict[str, float]
    run_dir: Path
    notes: list[str] = field(default_factory=list)


RESULTS_NAME = "demo.json"


def run_part(name: str, part: Callable[..., DemoResult], output_dir: Path, quick: bool) -> tuple[DemoResult, float]:
    """Run one demo part (a ``tujie.demo`` entry point, loaded) into ``output_dir``, record it in ``demo.json`` and
    return its result and wall time in seconds; ``tujie demo`` and the app's train buttons both go through here."""
    start = time.perf_counter()
    result = part(output_dir, quick=quick)
    seconds = time.perf_counter() - start
    record_result(output_dir, name, result, seconds, quick)
    return result, seconds


def record_result(output_dir: Path, part: str, result: DemoResult, seconds: float, quick: bool) -> Path:
    """Add one finished part to ``output_dir/demo.json`` (atomically), keeping the other parts' latest results,
    so that a ``--only`` run updates its parts and the app shows every part's most recent figures."""
    from tujie_core.checkpoint import atomic_write_bytes

    path = Path(output_dir) / RESULTS_NAME
    results = demo_results(output_dir)
    entry = asdict(result) | {"run_dir": str(result.run_dir), "seconds": round(seconds, 1), "quick": quick}
    entry["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results[part] = entry
    atomic_write_bytes(path, json.dumps(results, indent=2).encode())
    return path


def demo_results(output_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest result of each demo part recorded under ``output_dir`` (empty if none), keyed by part name:
    ``name``, ``metrics``, ``run_dir``, ``notes``, ``seconds``, ``quick`` and ``finished`` (UTC, ISO 8601)."""
    path = Path(output_dir) / RESULTS_NAME
    if not path.is_file():
        return {}
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a demo results file ({exc})") from exc
    return results if isinstance(results, dict) else {}


def bundled_config(name: str) -> Path:
    """Path of a config shipped inside tujie_core (``configs/<name>.yaml``)."""
    return Path(str(resources.files("tujie_core") / "configs" / f"{name}.yaml"))


def core_demo(output_dir: Path, quick: bool = False) -> DemoResult:
    """Train an MLP on scikit-learn's digits with the core trainer, report on the held-out test split, and compress
    it (int8, ONNX) into a size/latency/accuracy table in the report."""
    from tujie_core.runs import compress_run, train_from_config

    overrides = [f"output_dir={output_dir}"] + (["trainer.max_epochs=5"] if quick else [])
    config = load_config(bundled_config("digits_mlp"), overrides)
    result = train_from_config(config)
    keys = ["test/accuracy", "test/f1_macro", "test/roc_auc", "test/ece", "test/loss"]
    metrics = {k: result.metrics[k] for k in keys}
    if result.is_global_zero:
        fp32, *variants = compress_run(result.run_dir, ["int8", "onnx"]).rows
        for row in variants:
            metrics[f"{row.method} test/accuracy"] = row.metric
            metrics[f"{row.method} size × smaller"] = fp32.size_mb / row.size_mb
            metrics[f"{row.method} batch-32 speed-up ×"] = fp32.latency_b32_ms / row.latency_b32_ms
    return DemoResult("core: digits MLP", metrics, result.run_dir, [f"report: {result.report}"])
