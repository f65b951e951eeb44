"""The privacy report card of a run: ``privacy.md`` + ``privacy.json`` beside its ``report.md``.

It gathers what a reviewer asks about a model trained on personal data: how it was made private (accountant, ε
at δ, σ, clipping norm, sampling rate, steps, Poisson sampling, library versions, seed), what privacy cost in
utility (against a non-private run on the same data), how an attacker does against it (the audit), what the data
held (the identifier scan) and the caveats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tujie_core import ConfigError
from tujie_privacy.audit import AUDIT_DIR
from tujie_privacy.dp import DP_FILE
from tujie_privacy.scan import LINE_SUFFIXES, TABLE_SUFFIXES, ScanReport, scan_file

CAVEATS = [
    "ε bounds what any attacker can learn about one training record, for the mechanism as run; it says nothing "
    "about data that was not in the training set or about records repeated many times.",
    "The audit's attacks and ε̂ are lower bounds from black-box attacks: a weak attack does not prove privacy.",
    "Sampling and noise come from seeded generators (reproducible, resumable); for deployment where the seed "
    "could leak, use a cryptographically secure generator.",
    "The identifier scan finds direct identifiers by pattern and checksum; quasi-identifiers (age + postcode + "
    "sex) and free-text descriptions of people need a human review.",
]


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _data_files(run_dir: Path) -> list[Path]:
    """Files the run's config reads its data from (CSV, TSV, JSON lines, text), for the scan."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    data = config.get("data") or {}
    values = [v for v in data.values() if isinstance(v, str)]
    suffixes = (*TABLE_SUFFIXES, *LINE_SUFFIXES)
    return [Path(v) for v in values if Path(v).suffix.lower() in suffixes and Path(v).is_file()]


def _metric_rows(run: dict[str, float], baseline: dict[str, float] | None) -> list[str]:
    keys = [k for k in run if k.startswith(("test/", "val/")) and not k.endswith(("_micro", "_weighted"))]
    rows = ["| metric | this run | non-private baseline | difference |", "|---|---:|---:|---:|"]
    for key in keys:
        base = baseline.get(key) if baseline else None
        diff = f"{run[key] - base:+.4f}" if base is not None else "–"
        rows.append(f"| {key} | {run[key]:.4f} | {f'{base:.4f}' if base is not None else '–'} | {diff} |")
    return rows


def privacy_report(
    run_dir: str | Path, baseline: str | Path | None = None, scan: list[str | Path] | None = None
) -> tuple[Path, dict[str, Any]]:
    """Write ``privacy.md`` and ``privacy.json`` into ``run_dir``; ``baseline``: a non-private run on the same data;
    ``scan``: data files to scan (default: the files the run's config names)."""
    run_dir = Path(run_dir)
    summary = _json(run_dir / "summary.json")
    if summary is None or not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a finished run folder (missing summary.json or config.yaml)")
    dp = _json(run_dir / DP_FILE)
    base_summary = None
    if baseline is not None:
        base_summary = _json(Path(baseline) / "summary.json")
        if base_summary is None:
            raise ConfigError(f"{baseline}: not a finished run folder (missing summary.json)")
    audit = _json(run_dir / AUDIT_DIR / "audit.json")
    files = [Path(p) for p in scan] if scan is not None else _data_files(run_dir)
    scans: dict[str, ScanReport] = {str(p): scan_file(p) for p in files}
    card = {
        "run": str(run_dir),
        "dp": dp,
        "utility": {"run": summary["metrics"], "baseline": base_summary["metrics"] if base_summary else None},
        "audit": audit,
        "scan": {p: {"rows": r.rows, "counts": r.counts, "named_columns": r.named_columns} for p, r in scans.items()},
        "caveats": CAVEATS,
    }
    (run_dir / "privacy.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    (run_dir / "privacy.md").write_text(_markdown(card, scans), encoding="utf-8")
    return run_dir / "privacy.md", card


def _markdown(card: dict[str, Any], scans: dict[str, ScanReport]) -> str:
    lines = [f"# Privacy report card: `{card['run']}`", "", "## Training mechanism", ""]
    dp = card["dp"]
    if dp is None:
        lines.append("**Not differentially private**: trained without the dp plugin; no ε bounds what it leaks.")
    else:
        lines += [
            "| | |",
            "|---|---|",
            f"| mechanism | {dp['mechanism']}, {dp['clipping']} clipping |",
            f"| ε (spent) at δ | {dp['epsilon']:.3f} at δ = {dp['delta']:.3g} |",
            f"| budget | {dp['target_epsilon'] if dp['target_epsilon'] is not None else 'none'} |",
            f"| accountant | {dp['accountant'].upper()} |",
            f"| noise multiplier σ | {dp['noise_multiplier']:.4g} |",
            f"| clipping norm C | {dp['max_grad_norm']} |",
            f"| sampling rate q | {dp['sample_rate']:.4g} (expected batch {dp['expected_batch_size']} of "
            f"{dp['dataset_size']}) |",
            f"| steps | {dp['steps']} |",
            f"| Poisson sampling | {'on' if dp['poisson_sampling'] else 'off (ε assumes it)'} |",
            f"| model changes | {'; '.join(dp['model_changes']) or 'none'} |",
            f"| seed | {dp['seed']} |",
            f"| versions | {', '.join(f'{k} {v}' for k, v in dp['versions'].items())} |",
        ]
        if dp.get("budget_stop"):
            lines += ["", dp["budget_stop"]]
    lines += ["", "## Utility", "", *_metric_rows(card["utility"]["run"], card["utility"]["baseline"])]
    if card["utility"]["baseline"] is None:
        lines += ["", "No non-private baseline given (`tujie privacy report RUN --baseline OTHER_RUN`)."]
    lines += ["", "## Membership-inference audit", ""]
    audit = card["audit"]
    if audit is None:
        lines.append("Not audited yet: `tujie privacy audit RUN_DIR`.")
    else:
        lines += ["| attack | ROC-AUC | TPR @ 1% FPR | TPR @ 0.1% FPR |", "|---|---:|---:|---:|"]
        for a in audit["attacks"].values():
            lines.append(f"| {a['name']} | {a['auc']:.3f} | {a['tpr_at_1pct_fpr']:.3f} | {a['tpr_at_01pct_fpr']:.3f} |")
        c = audit.get("canaries")
        if c:
            control = (
                f" (non-private control: ε̂ ≥ {c['control_epsilon_lower_bound']:.2f})"
                if c.get("control_epsilon_lower_bound") is not None
                else ""
            )
            lines += ["", f"Canaries: ε̂ ≥ {c['epsilon_lower_bound']:.2f} from {c['canaries']} canaries{control}."]
    lines += ["", "## Data scan", ""]
    if not scans:
        lines.append("No data file to scan (built-in dataset); scan your files with `tujie privacy scan DATA`.")
    for path, report in scans.items():
        verdict = "no direct identifiers found" if report.clean else "**identifiers found: review before training**"
        lines += [f"`{path}`: {verdict}.", "", report.markdown(), ""]
    lines += ["", "## Caveats", "", *(f"- {c}" for c in card["caveats"])]
    return "\n".join(lines) + "\n"
