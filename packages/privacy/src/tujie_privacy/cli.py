"""``tujie privacy``: scan data for identifiers, audit a trained run, write its privacy report card.

DP training itself is a flag of every training verb: ``tujie train CONFIG --dp epsilon=3``,
``tujie nlp train ... --dp epsilon=3``. User errors print one line and exit 2 (core's ``main``).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from tujie_core.cli import metrics_table

app = typer.Typer(
    help="Privacy: identifier scan, membership-inference audit, report card, encrypted inference.",
    no_args_is_help=True,
)
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


def _he_models(sources: list[str], degree: int) -> dict:
    """NAME=PATH or PATH (a run folder, or a folder from ``he-compile``) → compiled models by name."""
    from tujie_core import DataError
    from tujie_privacy.he.model import CONFIG_NAME, HEModel, compile_run

    models = {}
    for source in sources:
        name, _, path_text = source.rpartition("=")
        path = Path(path_text)
        if not path.is_dir():
            raise DataError(f"{path}: no such folder (give a run folder or a folder from 'tujie privacy he-compile')")
        model = HEModel.load(path) if (path / CONFIG_NAME).is_file() else compile_run(path, degree=degree)
        name = name or model.meta.get("name") or path.name
        if name in models:
            raise DataError(f"two models named '{name}': give one as NAME=PATH")
        models[name] = model
    return models


@app.command("he-compile")
def he_compile(
    run_dir: Path = typer.Argument(..., help="a finished supervised run (linear or mlp model)"),
    output: Path = typer.Argument(..., help="folder for the compiled model (he_model.json + .safetensors)"),
    degree: int = typer.Option(2, min=2, max=4, help="degree of the polynomial fitted to a non-polynomial activation"),
) -> None:
    """Compile a run's model for encrypted inference (refused, naming the layer, when it cannot be exact enough)."""
    from tujie_privacy.he.model import compile_run

    model = compile_run(run_dir, degree=degree)
    model.save(output)
    _print_he_models({output.name: model})
    console.print(f"compiled: {output}")


def _print_he_models(models: dict) -> None:
    rows = []
    for name, model in models.items():
        p = model.parameters()
        agreement = model.meta.get("agreement_vs_original")
        rows.append(
            (
                name,
                str(model.depth),
                f"N={p.poly_modulus_degree}, {p.coeff_mod_bit_sizes}",
                "exact" if not any(a.max_error for a in model.activations) else f"{agreement:.2%} agree",
            )
        )
    console.print(metrics_table("encrypted models", rows, ("name", "depth", "CKKS", "vs original")))
    for name, model in models.items():
        console.print(f"{name}: {model.describe()}", soft_wrap=True)


@app.command("he-serve")
def he_serve(
    models: list[str] = typer.Argument(..., help="run folders or compiled folders, each PATH or NAME=PATH"),
    host: str = typer.Option("127.0.0.1", help="interface (localhost by default; use TLS in front for others)"),
    port: int = typer.Option(8000, min=1, max=65535),
    degree: int = typer.Option(2, min=2, max=4, help="polynomial degree for a non-polynomial activation"),
    max_sessions: int = typer.Option(32, min=1),
    session_ttl: float = typer.Option(600.0, min=1.0, help="seconds idle before a session expires"),
    max_request_mb: float = typer.Option(256.0, min=0.01, help="largest ciphertext batch accepted"),
    max_context_mb: float = typer.Option(32.0, min=0.01, help="largest public context accepted"),
    max_concurrent: int = typer.Option(2, min=1, help="evaluations at once (others wait)"),
) -> None:
    """Serve encrypted inference over HTTP: the server sees only a public context and ciphertexts."""
    from tujie_privacy.he.serve import serve
    from tujie_privacy.he.server import MiB, ServiceLimits

    compiled = _he_models(models, degree)
    _print_he_models(compiled)
    limits = ServiceLimits(
        int(max_request_mb * MiB), int(max_context_mb * MiB), max_sessions, session_ttl, max_concurrent
    )
    console.print(f"serving {', '.join(compiled)} on http://{host}:{port} (Ctrl-C stops)")
    serve(compiled, host, port, limits)


@app.command("he-predict")
def he_predict(
    url: str = typer.Argument(..., help="the server, e.g. http://127.0.0.1:8000"),
    data: Path = typer.Argument(..., help="CSV/TSV of features with a header row"),
    output: Path = typer.Option(Path("predictions.csv"), help="predictions CSV (rejected rows: OUTPUT.rejects.csv)"),
    model: str | None = typer.Option(None, help="the served model (needed when the server has several)"),
    security: int = typer.Option(128, help="security level of the keys: 128, 192 or 256 bits"),
    resume: bool = typer.Option(True, help="continue an interrupted job on the same input"),
) -> None:
    """Predict a file through an encrypted-inference server: keys are made and kept here; only ciphertexts leave."""
    import httpx

    from tujie_core import DataError
    from tujie_privacy.he.client import ServiceClient, ServiceError
    from tujie_privacy.he.params import ParameterError
    from tujie_privacy.he.predict import predict_file

    if not data.is_file():
        raise DataError(f"{data}: no such file")
    try:
        with ServiceClient(url, model, security=security) as client:
            summary = predict_file(client, data, output, resume=resume)
    except httpx.HTTPError as exc:
        raise DataError(f"{url}: cannot reach the server ({type(exc).__name__}: {exc})") from None
    except (ServiceError, ParameterError) as exc:
        raise DataError(f"{url}: {exc}") from None
    console.print(
        f"{summary.predicted} of {summary.rows} rows predicted under encryption into {summary.output}"
        + (f"; {summary.rejected} rejected (see {summary.rejects})" if summary.rejected else "")
        + f"; {client.timing.bytes_sent / 1e6:.1f} MB sent, {client.timing.bytes_received / 1e6:.1f} MB received"
    )
    for example in summary.examples:
        console.print(f"  rejected {example}")
