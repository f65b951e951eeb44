"""Callbacks with no-op hooks (Lightning style) and plugins that wrap a whole run.

Hooks run in this order in an epoch: ``on_train_epoch_start`` → per optimizer step
(``on_before_optimizer_step``, ``on_train_step_end``) → ``on_train_epoch_end`` with the epoch's metrics
(validation included). ``state_dict``/``load_state_dict`` go into every checkpoint; ``report_section`` adds
markdown to the run's report.

Generic callbacks (early stopping, checkpointing, pruning) are typed on :class:`~tujie_core.loop.Loop`, so a kind of
run with a loop of its own can call their epoch hooks too; the rest need the supervised
:class:`~tujie_core.trainer.Trainer`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from tujie_core.errors import TrainingError
from tujie_core.loop import Loop
from tujie_core.optim import Schedule
from tujie_core.registry import Registry

if TYPE_CHECKING:
    from tujie_core.trainer import Trainer

CALLBACKS: Registry = Registry("callbacks")
PLUGINS: Registry = Registry("plugins")


class Callback:
    """Base class: override the hooks you need. ``order`` sorts callbacks (checkpointing runs last)."""

    order: int = 0

    @property
    def state_key(self) -> str:
        return type(self).__name__

    def on_fit_start(self, trainer: Loop) -> None: ...
    def on_train_epoch_start(self, trainer: Loop) -> None: ...
    def on_before_optimizer_step(self, trainer: Trainer, optimizer: Optimizer, loss: Tensor) -> None: ...
    def on_train_step_end(self, trainer: Loop, loss: Tensor) -> None: ...
    def on_train_epoch_end(self, trainer: Loop, metrics: dict[str, float]) -> None: ...
    def on_fit_end(self, trainer: Loop) -> None: ...

    def epoch_metrics(self, trainer: Loop) -> dict[str, float]:
        """Values to add to the epoch's metrics (and the metrics log) before ``on_train_epoch_end``."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def report_section(self, trainer: Loop) -> str | None:
        return None


class Plugin(Callback):
    """A callback that may also replace the model, optimizer and training loader, and take over backward.

    In ``fit``: ``wrap`` (before Fabric's setup, on the raw objects) → Fabric's setup → ``setup`` (after it:
    ``trainer.model``, ``trainer.optimizer`` and ``trainer.train_loader`` may be replaced) → per micro-batch
    ``backward(trainer, loss, backward=..., sample_losses=..., weight=...)``, which must call ``backward`` (or
    replace it) → the callback hooks. ``loss`` is the micro-batch's mean loss times ``weight``, its share of the
    optimizer step's items (1 when a step is one batch). A plugin that sets ``needs_sample_losses = True`` gets
    ``sample_losses``: one loss per sample, scaled like ``loss`` (their mean is ``loss``), for per-sample gradient
    clipping such as Opacus' ghost clipping; ``None`` when the task cannot split its loss
    (:meth:`Task.sample_losses`).

    ``prepare_model`` may change the model's architecture before anything else sees it (DP-SGD replaces
    BatchNorm with GroupNorm); a run that builds its model from a config applies it on every rebuild too, so the
    saved weights load again.
    Raise :class:`~tujie_core.ConfigError` from ``wrap`` or ``setup`` to refuse a run the plugin cannot handle
    (for example several processes). The privacy package builds DP-SGD on this; any package can register a plugin
    in the ``tujie.plugins`` entry-point group and name it under ``plugins:`` in a run config.
    """

    def wrap(
        self, trainer: Trainer, model: nn.Module, optimizer: Optimizer, train_loader: Iterable[Any]
    ) -> tuple[nn.Module, Optimizer, Iterable[Any]]:
        return model, optimizer, train_loader

    needs_sample_losses: bool = False

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model

    def setup(self, trainer: Trainer) -> None: ...

    def backward(
        self,
        trainer: Trainer,
        loss: Tensor,
        *,
        backward: Callable[..., Any],
        sample_losses: Tensor | None = None,
        weight: float = 1.0,
    ) -> None:
        backward(loss, sample_losses=sample_losses, weight=weight)


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _monitored(metrics: dict[str, float], monitor: str, owner: str) -> float | None:
    if monitor not in metrics:
        if any(k.startswith("val/") for k in metrics) or not monitor.startswith("val/"):
            raise TrainingError(
                f"{owner}: monitored metric '{monitor}' not found; logged: {', '.join(sorted(metrics))}"
            )
        return None  # no validation data this run
    return metrics[monitor]


@CALLBACKS.register("early_stopping")
class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(
        self, monitor: str = "val/loss", mode: Literal["min", "max"] = "min", patience: int = 3, min_delta: float = 0.0
    ) -> None:
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.best: float | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    def on_train_epoch_end(self, trainer: Loop, metrics: dict[str, float]) -> None:
        value = _monitored(metrics, self.monitor, "early stopping")
        if value is None:
            return
        if _improved(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = trainer.state.epoch
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait, self.stopped_epoch = state["best"], state["wait"], state["stopped_epoch"]

    def report_section(self, trainer: Loop) -> str | None:
        if self.stopped_epoch is None:
            return None
        return (
            f"Early stopping: `{self.monitor}` did not improve for {self.patience} epochs; "
            f"stopped after epoch {self.stopped_epoch}."
        )


@CALLBACKS.register("checkpoint")
class ModelCheckpoint(Callback):
    """Write ``last.ckpt`` (every ``every_n_steps`` optimizer steps and every epoch) and ``best.ckpt``."""

    order = 100  # after every callback whose state belongs in the checkpoint

    def __init__(
        self,
        dirpath: Path,
        monitor: str = "val/loss",
        mode: Literal["min", "max"] = "min",
        every_n_steps: int | None = None,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.monitor, self.mode, self.every_n_steps = monitor, mode, every_n_steps
        self.best: float | None = None
        self.best_epoch: int | None = None

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    @property
    def best_path(self) -> Path:
        return self.dirpath / "best.ckpt"

    def on_train_step_end(self, trainer: Loop, loss: Tensor) -> None:
        if self.every_n_steps and trainer.state.step % self.every_n_steps == 0:
            trainer.save_checkpoint(self.last_path)

    def on_train_epoch_end(self, trainer: Loop, metrics: dict[str, float]) -> None:
        value = _monitored(metrics, self.monitor, "checkpoint")
        if value is not None and _improved(value, self.best, self.mode, 0.0):
            self.best, self.best_epoch = value, trainer.state.epoch
            trainer.save_checkpoint(self.best_path)
        trainer.save_checkpoint(self.last_path)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]

    def report_section(self, trainer: Loop) -> str | None:
        if self.best is None:
            return None
        return (
            f"Best checkpoint: epoch {self.best_epoch}, `{self.monitor}` = {self.best:.4g} (`checkpoints/best.ckpt`)."
        )


@CALLBACKS.register("gradient_clipping")
class GradientClipping(Callback):
    """Clip gradients by global norm or by value before every optimizer step (mixed precision aware)."""

    def __init__(self, max_value: float, algorithm: Literal["norm", "value"] = "norm") -> None:
        self.max_value, self.algorithm = max_value, algorithm

    def on_before_optimizer_step(self, trainer: Trainer, optimizer: Optimizer, loss: Tensor) -> None:
        key = "max_norm" if self.algorithm == "norm" else "clip_val"
        trainer.fabric.clip_gradients(trainer.model, optimizer, **{key: self.max_value})


@CALLBACKS.register("nan_guard")
class NonFiniteLossGuard(Callback):
    """Stop with a clear message, before the optimizer step, when the loss is NaN or infinite on any process
    (every process stops together, none is left waiting in the next collective)."""

    def on_before_optimizer_step(self, trainer: Trainer, optimizer: Optimizer, loss: Tensor) -> None:
        bad = (~torch.isfinite(loss.detach())).float()
        if trainer.world_size > 1:
            bad = trainer.fabric.all_reduce(bad, reduce_op="sum")
        if bad.item():
            value = loss.item() if not torch.isfinite(loss) else "non-finite on another process"
            raise TrainingError(
                f"loss is {value} at epoch {trainer.state.epoch}, step {trainer.state.step + 1}: training stopped "
                "before the weights were updated. Lower the learning rate, enable gradient clipping "
                "(trainer.gradient_clip_val) or check the inputs for NaN/inf values."
            )


class LRScheduling(Callback):
    """Step a :class:`~tujie_core.optim.Schedule` every optimizer step, every epoch or on a monitored metric."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule

    def on_train_step_end(self, trainer: Trainer, loss: Tensor) -> None:
        if self.schedule.interval == "step" and not trainer.step_skipped:
            self.schedule.scheduler.step()

    def on_train_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if self.schedule.interval != "epoch":
            return
        if isinstance(self.schedule.scheduler, ReduceLROnPlateau):
            value = _monitored(metrics, self.schedule.monitor or "val/loss", "plateau scheduler")
            if value is not None and math.isfinite(value):
                self.schedule.scheduler.step(value)
        else:
            self.schedule.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.schedule.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.scheduler.load_state_dict(state)
