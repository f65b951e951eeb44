"""The ``tujie`` command. Domain packages add sub-commands through the ``tujie.cli`` entry-point group
(``nlp = "tujie_nlp.cli:app"``), so core imports none of them and an uninstalled package does not appear.

User errors (missing file, malformed YAML, unknown key, wrong type, bad data) print one line and exit 2.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tujie_core import __version__
from tujie_core.errors import TujieError

app = typer.Typer(
    name="tujie",
    help="tujie: train, evaluate and ship models from 《图解大模型》 for domain teams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def metrics_table(title: str, rows: list[tuple[str, ...]], columns: tuple[str, ...]) -> Table:
    """A rich table with one column per name in ``columns``; every row has one cell per column."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


DP_OPTION = typer.Option(
    None,
    "--dp",
    help="train with differential privacy (tujie-privacy's dp plugin): epsilon=3[,delta=1e-5,max_grad_norm=1.0]",
)


def plugin_flags(dp: str | None) -> dict[str, str]:
    """The plugins that training verbs' flags ask for (``--dp OPTIONS``), for ``load_config(plugins=...)``."""
    return {} if dp is None else {"dp": dp}


@app.command()
def train(
    config: Path = typer.Argument(..., help="run config (YAML)"),
    resume: Path | None = typer.Option(None, help="run folder or checkpoint to continue"),
    overrides: list[str] = typer.Option([], "--set", "-s", help="override a config key: trainer.max_epochs=3"),
    dp: str | None = DP_OPTION,
) -> None:
    """Train a model from a run config and write a run folder with checkpoints and a report."""
    from tujie_core.runs import load_config, train_from_config

    result = train_from_config(load_config(config, overrides, plugin_flags(dp)), resume=resume)
    if result.is_global_zero:
        rows = [(k, f"{v:.4f}") for k, v in result.metrics.items()]
        console.print(metrics_table("metrics", rows, ("metric", "value")))
        for warning in result.warnings:
            err_console.print(f"warning: {warning}", markup=False)
        console.print(f"run folder: {result.run_dir}\nreport: {result.report}")


@app.command()
def demo(
    output_dir: Path = typer.Option(Path("runs/demo"), help="where run folders go"),
    only: list[str] = typer.Option([], help="run only these parts (entry-point names, e.g. core)"),
    quick: bool = typer.Option(False, help="fewer epochs, for a smoke test"),
) -> None:
    """Run every installed package's demo on its embedded default data and print a metrics table; each part's
    latest result is kept in OUTPUT_DIR/demo.json (the app's home page shows it)."""
    from tujie_core.demo import run_part

    parts = sorted(metadata.entry_points(group="tujie.demo"), key=lambda ep: (ep.name != "core", ep.name))
    unknown = set(only) - {ep.name for ep in parts}
    if unknown:
        raise TujieError(
            f"--only: no demo part named {', '.join(sorted(unknown))}; installed: {', '.join(ep.name for ep in parts)}"
        )
    rows: list[tuple[str, str, str]] = []
    folders = []
    for ep in parts:
        if only and ep.name not in only:
            continue
        try:
            part = ep.load()
        except Exception as exc:  # a broken optional package must not take the other parts down
            err_console.print(f"tujie demo: skipping '{ep.name}' ({type(exc).__name__}: {exc})", markup=False)
            continue
        result, elapsed = run_part(ep.name, part, output_dir, quick)
        rows += [(result.name, name, f"{value:.4f}") for name, value in result.metrics.items()]
        rows.append((result.name, "wall time (s)", f"{elapsed:.1f}"))
        folders.append(f"{result.name}: {result.run_dir}" + "".join(f"\n  {note}" for note in result.notes))
    console.print(metrics_table("tujie demo", rows, ("part", "metric", "value")))
    console.print("\n".join(folders))


@app.command()
def tune(
    config: Path = typer.Argument(..., help="run config (YAML) with a tune: section"),
    trials: int | None = typer.Option(None, help="finished trials wanted in the study (default: tune.trials)"),
    workers: int = typer.Option(1, help="worker processes sharing the study"),
    overrides: list[str] = typer.Option([], "--set", "-s", help="override a config key: tune.sampler.name=random"),
    dp: str | None = DP_OPTION,
) -> None:
    """Search hyperparameters with Optuna; resumes the study in the tune folder if one exists."""
    from tujie_core.runs import load_config
    from tujie_core.tune import tune as run_tune

    if workers < 1 or (trials is not None and trials < 1):
        raise TujieError("--workers and --trials must be at least 1")
    result = run_tune(load_config(config, overrides, plugin_flags(dp)), trials=trials, workers=workers)
    rows = [(key, str(value)) for key, value in result.best_params.items()]
    rows.append(("best value", f"{result.best_value:.4f}"))
    rows.append(("trials", f"{result.n_complete} complete, {result.n_pruned} pruned, {result.n_failed} failed"))
    console.print(metrics_table("best trial", rows, ("parameter", "value")))
    console.print(f"best config: {result.best_config}\nsummary: {result.output_dir / 'tune.md'}")


@app.command()
def compress(
    run_dir: Path = typer.Argument(..., help="a finished run folder"),
    methods: str | None = typer.Option(
        None,
        help="comma-separated: prune, prune-structured, lowrank, int8, int8-static, qat, onnx, distil "
        "(default: prune,lowrank,int8 and, for classification, distil)",
    ),
    fine_tune_epochs: int = typer.Option(2, help="epochs of fine-tuning after pruning/low-rank, and for QAT"),
    options: list[str] = typer.Option([], "--set", "-s", help="a method option: prune.amount=0.7, lowrank.rank=16"),
    student: list[str] = typer.Option([], help="distillation student's model option: hidden=[32]"),
) -> None:
    """Compress a trained run with each method and write a size/latency/metric table into its report."""
    from tujie_core.config import apply_overrides
    from tujie_core.run import DEFAULT_METHODS
    from tujie_core.runs import compress_run

    names = None if methods is None else [m.strip() for m in methods.split(",") if m.strip()]
    if names == []:
        raise TujieError("--methods: name at least one method")
    method_options = apply_overrides({}, options)
    allowed = names or DEFAULT_METHODS
    for name, value in method_options.items():
        if name not in allowed or not isinstance(value, dict):
            raise TujieError(f"--set {name}: expected METHOD.OPTION=VALUE for one of --methods ({', '.join(allowed)})")
    result = compress_run(
        run_dir,
        names,
        options=method_options,
        fine_tune_epochs=fine_tune_epochs,
        student=apply_overrides({}, student),
    )
    typer.echo(result.table)
    for note in result.notes:
        console.print(note)
    console.print(f"table: {result.output_dir / 'compression.md'} (also in {run_dir / 'report.md'})")


evaluate_app = typer.Typer(
    help="Model selection: cross-validation, decision thresholds, ensembles.", no_args_is_help=True
)
app.add_typer(evaluate_app, name="evaluate")


@evaluate_app.command("cv")
def evaluate_cv(
    config: Path = typer.Argument(..., help="run config (YAML)"),
    folds: int = typer.Option(5, help="number of folds"),
    stratified: bool = typer.Option(True, help="keep class proportions in every fold"),
    output_dir: Path | None = typer.Option(None, help="default: <output_dir>/<name>/cv"),
    overrides: list[str] = typer.Option([], "--set", "-s", help="override a config key: trainer.max_epochs=3"),
) -> None:
    """k-fold cross-validation of a run config: mean ± std of every validation metric."""
    from tujie_core.evaluate import cross_validate
    from tujie_core.runs import load_config

    cv = cross_validate(load_config(config, overrides), folds, stratified=stratified, output_dir=output_dir)
    rows = [(k, f"{cv.mean[k]:.4f}", f"{cv.std[k]:.4f}") for k in cv.mean]
    console.print(metrics_table(f"{folds}-fold cross-validation", rows, ("metric", "mean", "std")))
    console.print(f"folds: {cv.run_dirs[0].parent}")


@evaluate_app.command("threshold")
def evaluate_threshold(
    run_dir: Path = typer.Argument(..., help="a finished binary-classification run folder"),
    objective: str = typer.Option("f1", help="recall | precision | f1"),
    target: float | None = typer.Option(None, help="the recall or precision to reach, e.g. 0.95"),
) -> None:
    """Choose a binary run's decision threshold on validation data and store it with the model."""
    from tujie_core.evaluate import tune_run_threshold

    if objective not in ("recall", "precision", "f1"):
        raise TujieError(f"--objective: expected recall, precision or f1, got '{objective}'")
    choice, metrics = tune_run_threshold(run_dir, objective, target)  # type: ignore[arg-type]
    console.print(
        f"threshold {choice.threshold:.4f}: val precision {choice.precision:.4f}, recall {choice.recall:.4f}, "
        f"F1 {choice.f1:.4f} (stored in {run_dir / 'model' / 'config.json'})"
    )
    console.print(
        metrics_table(
            "metrics at the new threshold", [(k, f"{v:.4f}") for k, v in metrics.items()], ("metric", "value")
        )
    )


@evaluate_app.command("ensemble")
def evaluate_ensemble(
    run_dirs: list[Path] = typer.Argument(..., help="two or more finished run folders on the same data"),
    method: str = typer.Option("mean", help="mean (average probabilities) | vote (majority)"),
) -> None:
    """Evaluate several trained runs and their ensemble side by side."""
    from tujie_core.evaluate import ensemble_runs

    if method not in ("mean", "vote"):
        raise TujieError(f"--method: expected mean or vote, got '{method}'")
    results, _ = ensemble_runs(run_dirs, method)  # type: ignore[arg-type]
    keys = [k for k in next(iter(results.values())) if k.endswith(("accuracy", "loss", "f1_macro", "f1", "r2", "mae"))]
    table = Table(title=f"ensemble ({method})")
    for column in ("model", *keys):
        table.add_column(column)
    for name, metrics in results.items():
        table.add_row(name, *(f"{metrics[k]:.4f}" for k in keys))
    console.print(table)


@app.command()
def version() -> None:
    """Print the versions of the installed tujie packages."""
    for dist in sorted(d.metadata["Name"] for d in metadata.distributions() if d.metadata["Name"].startswith("tujie")):
        console.print(f"{dist} {metadata.version(dist)}")


def _add_domain_commands() -> None:
    present = {group.name for group in app.registered_groups}
    for ep in metadata.entry_points(group="tujie.cli"):
        if ep.name in present:
            continue
        try:
            app.add_typer(ep.load(), name=ep.name)
        except Exception as exc:  # a broken optional package must not take the CLI down
            err_console.print(f"tujie: skipping '{ep.name}' commands ({type(exc).__name__}: {exc})")


def main() -> None:
    _add_domain_commands()
    try:
        app()
    except TujieError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)


__all__ = ["__version__", "app", "main"]
