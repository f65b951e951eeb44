"""Progress display: rich bars on an interactive terminal, plain lines in CI and pipes."""

from __future__ import annotations

import os
import sys
from typing import Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

Mode = Literal["auto", "rich", "plain", "none"]


def resolve_mode(mode: Mode) -> Literal["rich", "plain", "none"]:
    if mode != "auto":
        return mode
    return "rich" if sys.stdout.isatty() and not os.environ.get("CI") else "plain"


def format_metrics(metrics: dict[str, float], keys: list[str] | None = None) -> str:
    keys = keys or sorted(metrics)
    return "  ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics)


class ProgressReporter:
    """Shows training progress; silent on every process but the first."""

    def __init__(
        self, mode: Mode, enabled: bool = True, log_every_n_steps: int = 50, keys: tuple[str, ...] = ()
    ) -> None:
        self.mode = resolve_mode(mode) if enabled else "none"
        self.log_every_n_steps = log_every_n_steps
        self.keys = list(keys)  # metrics shown at the end of an epoch; all when empty
        self._bar: Progress | None = None
        self._task = None

    def start_epoch(self, epoch: int, max_epochs: int, total: int, completed: int = 0) -> None:
        if self.mode == "rich":
            if self._bar is None:
                self._bar = Progress(
                    TextColumn("[bold]{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"),
                    console=Console(),
                    transient=False,
                )
                self._bar.start()
            self._task = self._bar.add_task(
                f"epoch {epoch + 1}/{max_epochs}", total=total, completed=completed, info=""
            )

    def advance(self, batches: int, step: int, loss: float | None) -> None:
        if self.mode == "rich" and self._bar is not None:
            info = "" if loss is None else f"loss={loss:.4g}"
            self._bar.update(self._task, advance=batches, info=info)
        elif self.mode == "plain" and loss is not None and step % self.log_every_n_steps == 0:
            print(f"step {step}  loss={loss:.4g}", flush=True)

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.mode == "rich" and self._bar is not None:
            self._bar.update(self._task, info=format_metrics(metrics, self.keys))
        elif self.mode == "plain":
            print(f"epoch {epoch + 1}  {format_metrics(metrics, self.keys)}", flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
