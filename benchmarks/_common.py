"""Shared benchmark plumbing: ``--quick``/``--json`` arguments, the markdown table and the JSON schema."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Row:
    name: str
    metric: str
    ours: float
    anchor: float | None
    anchor_source: str
    goal: float | None
    higher_is_better: bool
    unit: str


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """``--quick`` and ``--json PATH``, plus the script's own options added by ``extra``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="finish in under 2 minutes")
    parser.add_argument("--json", type=Path, help="write results to this JSON file")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def data_dir() -> Path:
    """Benchmark data folder: $TUJIE_DATA_DIR, default ../shared/data (relative to the repository root)."""
    return Path(os.environ.get("TUJIE_DATA_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def report(benchmark: str, quick: bool, rows: list[Row], json_path: Path | None) -> None:
    """Print the markdown table (ours beside the anchor) and write the JSON results."""
    print(f"\n## {benchmark}{' (quick)' if quick else ''}\n")
    print("| name | metric | ours | anchor | goal | unit | anchor source |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        goal = "–" if r.goal is None else f"{'≥' if r.higher_is_better else '≤'} {r.goal:g}"
        print(f"| {r.name} | {r.metric} | {_fmt(r.ours)} | {_fmt(r.anchor)} | {goal} | {r.unit} | {r.anchor_source} |")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"benchmark": benchmark, "quick": quick, "rows": [asdict(r) for r in rows]}
        json_path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
