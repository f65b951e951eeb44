"""The ``tujie`` command. Domain packages add sub-commands through the ``tujie.cli`` entry-point group
(``nlp = "tujie_nlp.cli:app"``), so core imports none of them and an uninstalled package does not appear.

User errors (missing file, malformed YAML, unknown key, wrong type, bad data) print one line and exit 2.
"""

from __future__ import annotations

import sys
import time
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


def metrics_table(title: str, rows: list[tuple[str, str, str]], columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


@app.command()
def train(
    config: Path = typer.Argument(..., help="run config (YAML)"),
    resume: Path | None = typer.Option(None, help="run folder or checkpoint to continue"),
    overrides: list[str] = typer.Option([], "--set", "-s", help="override a config key: trainer.max_epochs=3"),
) -> None:
    """Train a model from a run config and write a run folder with checkpoints and a report."""
    from tujie_core.config import load_config
    from tujie_core.run import train_from_config

    result = train_from_config(load_config(config, overrides), resume=resume)
    if result.is_global_zero:
        rows = [(k, f"{v:.4f}", "") for k, v in result.metrics.items()]
        console.print(metrics_table("metrics (best checkpoint)", rows, ("metric", "value", "")))
        console.print(f"run folder: {result.run_dir}\nreport: {result.report}")


@app.command()
def demo(
    output_dir: Path = typer.Option(Path("runs/demo"), help="where run folders go"),
    only: list[str] = typer.Option([], help="run only these parts (entry-point names, e.g. core)"),
    quick: bool = typer.Option(False, help="fewer epochs, for a smoke test"),
) -> None:
    """Run every installed package's demo on its embedded default data and print a metrics table."""
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
        start = time.perf_counter()
        result = ep.load()(output_dir, quick=quick)
        elapsed = time.perf_counter() - start
        rows += [(result.name, name, f"{value:.4f}") for name, value in result.metrics.items()]
        rows.append((result.name, "wall time (s)", f"{elapsed:.1f}"))
        folders.append(f"{result.name}: {result.run_dir}" + "".join(f"\n  {note}" for note in result.notes))
    console.print(metrics_table("tujie demo", rows, ("part", "metric", "value")))
    console.print("\n".join(folders))


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
