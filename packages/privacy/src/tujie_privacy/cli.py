"""``tujie privacy``: scan data for identifiers, audit a trained run, write its privacy report card.

DP training itself is a flag of every training verb: ``tujie train CONFIG --dp epsilon=3``,
``tujie nlp train ... --dp epsilon=3``. User errors print one line and exit 2 (core's ``main``).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from tujie_core.cli import metrics_table

app = typer.Typer(help="Privacy: identifier scan, membership-inference audit, report card.", no_args_is_help=True)
console = Console()


@app.command()
def scan(
    data: Path = typer.Argument(..., help="CSV, TSV, JSON-lines or text file"),
    redact: Path | None = typer.Option(None, help="write a copy with every identifier replaced by [KIND]"),
    kinds: str | None = typer.Option(None, help="comma-separated detectors (default: all)"),
    strict: bool = typer.Option(False, help="exit 1 when anything is found (for CI and data pipelines)"),
) -> None:
    """Find direct identifiers (e-mail, phone, card and national-ID numbers with checksums, IPs, URLs, birth
    dates) by column and row, and optionally write a redacted copy."""
    from tujie_privacy.scan import DETECTORS, scan_file

    names = None if kinds is None else [k.strip() for k in kinds.split(",") if k.strip()]
    for name in names or []:
        DETECTORS.get(name)  # an unknown detector: one line naming it, exit 2
    report = scan_file(data, names, redact_to=redact)
    typer.echo(report.markdown())
    verdict = "no direct identifiers found" if report.clean else "identifiers found: review before training"
    console.print(f"{data}: {verdict}" + (f"; redacted copy: {redact}" if redact else ""))
    if strict and not report.clean:
        raise typer.Exit(1)


@app.command()
def audit(
    run_dir: Path = typer.Argument(..., help="a finished supervised run folder"),
    references: int = typer.Option(4, min=0, help="reference models for LiRA (0: loss attack only)"),
    canaries: int = typer.Option(200, min=0, help="canaries for the one-run ε lower bound (0: none)"),
    seed: int = typer.Option(0),
) -> None:
    """Membership-inference audit (loss threshold, LiRA) and canary ε lower bound; writes RUN/audit/."""
    from tujie_privacy.audit import AUDIT_DIR, audit_run

    result = audit_run(run_dir, references=references, canaries=canaries, seed=seed)
    rows = [
        (a.name, f"{a.auc:.3f}", f"{a.tpr_at_1pct_fpr:.3f}", f"{a.tpr_at_01pct_fpr:.3f}")
        for a in result.attacks.values()
    ]
    console.print(metrics_table("membership inference", rows, ("attack", "ROC-AUC", "TPR@1%FPR", "TPR@0.1%FPR")))
    if result.canaries is not None:
        console.print(result.markdown().strip().splitlines()[-1])
    console.print(f"audit: {run_dir / AUDIT_DIR / 'audit.md'} (ROC plot: {run_dir / AUDIT_DIR / 'roc.png'})")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="a finished run folder"),
    baseline: Path | None = typer.Option(None, help="a non-private run on the same data, for the utility cost"),
    scan_files: list[Path] = typer.Option([], "--scan", help="data files to scan (default: those the config names)"),
) -> None:
    """Write the run's privacy report card (privacy.md + privacy.json beside report.md)."""
    from tujie_privacy.report import privacy_report

    path, _ = privacy_report(run_dir, baseline, scan_files or None)
    console.print(f"privacy report card: {path}")
