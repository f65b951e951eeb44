"""The tujie Trainer: a thin training loop on Lightning Fabric.

Fabric supplies the device, precision, distributed strategy (DDP/FSDP), process launcher and checkpoint I/O;
the loop adds what a domain team should not rewrite: exact gradient accumulation, resumable data order,
callbacks and plugins, streaming metrics and a metrics log.
"""

from __future__ import annotations

import atexit
import itertools
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.fabric import Fabric
from pydantic import ValidationError
from torch import Tensor
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler
from torchmetrics import MeanMetric, MetricCollection

from tujie_core.averaging import WeightEMA
from tujie_core.callbacks import (
    Callback,
    EarlyStopping,
    GradientClipping,
    LRScheduling,
    ModelCheckpoint,
    NonFiniteLossGuard,
    Plugin,
)
from tujie_core.checkpoint import AtomicCheckpointIO, rng_state, set_rng_state
from tujie_core.config import TrainerConfig
from tujie_core.errors import ConfigError
from tujie_core.metrics import counting_mode
from tujie_core.progress import ProgressReporter
from tujie_core.registry import format_validation_error
from tujie_core.tasks import Task


@dataclass
class TrainState:
    """Where training is: completed epochs, optimizer steps, micro-batches consumed in the current epoch."""

    epoch: int = 0
    step: int = 0
    batches_in_epoch: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Evaluation:
    """Scalar metrics plus curve-shaped results (ROC, PR, confusion matrix, reliability bins) of one split."""

    metrics: dict[str, float]
    curves: dict[str, Any]
    kind: str


class Trainer:
    """Train, validate, test and predict with any :class:`~tujie_core.tasks.Task`.

    >>> trainer = Trainer(max_epochs=5, run_dir="runs/demo")           # doctest: +SKIP
    >>> trainer.fit(ClassificationTask(model, num_classes=10), train_loader, val_loader)  # doctest: +SKIP
    """

    def __init__(
        self,
        config: TrainerConfig | None = None,
        *,
        callbacks: Sequence[Callback] = (),
        plugins: Sequence[Plugin] = (),
        run_dir: str | Path | None = None,
        **overrides: Any,
    ) -> None:
        base = (config or TrainerConfig()).model_dump()
        try:
            self.config = cfg = TrainerConfig.model_validate({**base, **overrides})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "", TrainerConfig)) from None
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.fabric = Fabric(
            accelerator=cfg.accelerator,
            devices=cfg.devices,
            strategy=cfg.strategy,
            num_nodes=cfg.num_nodes,
            precision=cfg.precision,
            plugins=[AtomicCheckpointIO()],
        )
        self.fabric.launch()
        if self.fabric.world_size > 1:
            atexit.register(_destroy_process_group)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.plugins = list(plugins)
        self.callbacks = list(callbacks)
        self.state = TrainState()
        self.should_stop = False
        self.model: Any = None
        self.optimizer: Any = None
        self.ema: WeightEMA | None = None
        self._active: list[Callback] = []
        shown = tuple(dict.fromkeys(("train/loss", "val/loss", cfg.monitor)))
        self.progress = ProgressReporter(cfg.progress, self.fabric.is_global_zero, cfg.log_every_n_steps, shown)

    # ---- public API -------------------------------------------------------------------------------------------
    @property
    def world_size(self) -> int:
        return self.fabric.world_size

    @property
    def checkpoint_callback(self) -> ModelCheckpoint | None:
        """The checkpointing callback of the last ``fit`` (present when ``run_dir`` is set)."""
        return next((c for c in self._active if isinstance(c, ModelCheckpoint)), None)

    def fit(
        self,
        task: Task,
        train_loader: DataLoader,
        val_loader: DataLoader | None = None,
        ckpt_path: str | Path | None = None,
    ) -> dict[str, float]:
        """Train until ``max_epochs``/``max_steps`` or a callback stops; resume from ``ckpt_path`` if given.

        Returns the last epoch's metrics.
        """
        cfg, fabric = self.config, self.fabric
        train_loader = self._epoch_ordered(train_loader, shuffle=isinstance(train_loader.sampler, RandomSampler))
        val_loader = self._epoch_ordered(val_loader, shuffle=False) if val_loader is not None else None
        steps_per_epoch = math.ceil(len(train_loader) / cfg.accumulate_grad_batches)
        total_steps = min(cfg.max_steps or math.inf, cfg.max_epochs * steps_per_epoch)
        raw_model = task.model
        optimizer, schedule = task.configure_optimizers(int(total_steps))
        model = raw_model
        for plugin in self.plugins:
            model, optimizer, train_loader = plugin.wrap(self, model, optimizer, train_loader)
        self.model, self.optimizer = fabric.setup(model, optimizer)
        self.ema = WeightEMA(self.model, cfg.ema_decay) if cfg.ema_decay is not None else None
        extra = [LRScheduling(schedule)] if schedule is not None else []
        everything = [*self._default_callbacks(), *self.callbacks, *self.plugins, *extra]
        self._active = sorted(everything, key=lambda c: c.order)
        train_metrics = task.metrics("train").clone(prefix="train/").to(fabric.device) if cfg.train_metrics else None
        self._loss_sum = torch.zeros((), device=fabric.device)  # running training-loss sum of this epoch
        pending_rng = self._restore(ckpt_path) if ckpt_path is not None else None
        task.model = self.model
        try:
            self._call("on_fit_start")
            while self.state.epoch < cfg.max_epochs and self.state.step < total_steps and not self.should_stop:
                self._train_epoch(task, train_loader, val_loader, train_metrics, total_steps, pending_rng)
                pending_rng = None
            if self.ema is not None:  # the model leaves fit with the weights that validation measured
                self.model.load_state_dict(self.ema.weights)
            self._call("on_fit_end")
        finally:
            task.model = raw_model
            self.progress.close()
        return self.state.history[-1] if self.state.history else {}

    def validate(self, task: Task, loader: DataLoader, prefix: str = "val") -> dict[str, float]:
        """Loss and metrics of ``task`` on ``loader``, keys prefixed ``val/``."""
        return self.evaluate(task, loader, prefix, curves=False).metrics

    def test(self, task: Task, loader: DataLoader) -> Evaluation:
        """Metrics and curves on a held-out split, keys prefixed ``test/``."""
        return self.evaluate(task, loader, "test", curves=True)

    def evaluate(self, task: Task, loader: DataLoader, prefix: str, curves: bool = True) -> Evaluation:
        with self._evaluation_model(task):
            return self._evaluate(task, self._epoch_ordered(loader, shuffle=False), prefix, curves)

    @torch.no_grad()
    def predict(self, task: Task, loader: Iterable[Any]) -> Tensor:
        """Predictions (probabilities or values) for every batch, concatenated on the CPU, in loader order."""
        outputs = []
        with self._evaluation_model(task):
            for batch in loader:
                outputs.append(task.predict_step(self.fabric.to_device(batch)).float().cpu())
        return torch.cat(outputs) if outputs else torch.empty(0)

    def report_sections(self) -> list[str]:
        """Markdown that callbacks and plugins of the last ``fit`` contribute to the run's report."""
        sections = [section for cb in self._active if (section := cb.report_section(self))]
        if self.ema is not None:
            sections.append(
                f"Weight averaging: EMA with decay {self.ema.decay} over {self.ema.updates} optimizer steps; "
                "validation, checkpoints' `averaged_model` and the final weights use the average."
            )
        return sections

    def load_weights(self, task: Task, path: str | Path) -> None:
        """Load the weights that validation measured into ``task.model``: the EMA when the run kept one, else the
        model (plugin wrappers' prefixes removed)."""
        checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
        averaged = checkpoint.get("averaged_model")
        weights = averaged["weights"] if averaged is not None else checkpoint["model"]
        consume_prefix_in_state_dict_if_present(weights, "_module.")
        task.model.load_state_dict(weights)

    def save_checkpoint(self, path: str | Path) -> None:
        """Model, optimizer, loop state, callback states and every process's RNG state; atomic on disk."""
        state = {
            "model": self.model,
            "optimizer": self.optimizer,
            "trainer": asdict(self.state)
            | {"should_stop": self.should_stop, "loss_sum": self.state.loss_sum + float(self._loss_sum)},
            "callbacks": {key: cb.state_dict() for key, cb in self._keyed_callbacks()},
            "rng": self._gather_rng(),
            "config": self.config.model_dump(mode="json"),
        }
        if self.ema is not None:
            state["averaged_model"] = self.ema.state_dict()
        self.fabric.save(Path(path), state)

    # ---- loop -------------------------------------------------------------------------------------------------
    def _train_epoch(
        self,
        task: Task,
        loader: DataLoader,
        val_loader: DataLoader | None,
        train_metrics: MetricCollection | None,
        total_steps: float,
        pending_rng: dict[str, Any] | None,
    ) -> None:
        cfg, state = self.config, self.state
        epoch = state.epoch
        self._set_epoch(loader, epoch)
        self.model.train()
        iterator = iter(loader)
        for _ in range(state.batches_in_epoch):  # resume mid-epoch: same order, skip what was already seen
            next(iterator)
        if pending_rng is not None:
            set_rng_state(pending_rng)
        self.progress.start_epoch(epoch, cfg.max_epochs, len(loader), state.batches_in_epoch)
        self._call("on_train_epoch_start")
        while state.step < total_steps and not self.should_stop:
            window = list(itertools.islice(iterator, cfg.accumulate_grad_batches))
            if not window:
                break
            self._optimizer_step(task, window, train_metrics)

        metrics = {"train/loss": self._epoch_train_loss()}
        if train_metrics is not None:
            metrics |= {k: float(v) for k, v in train_metrics.compute().items()}
            train_metrics.reset()
        if val_loader is not None:
            with self.ema.applied(self.model) if self.ema is not None else nullcontext():
                metrics |= self._evaluate(task, val_loader, "val", curves=False).metrics
        state.epoch += 1
        state.batches_in_epoch, state.loss_sum, state.loss_count = 0, 0.0, 0
        self._loss_sum = torch.zeros((), device=self.fabric.device)
        record = {"epoch": state.epoch, "step": state.step, **metrics}
        state.history.append(record)
        self._log(record)
        self.progress.end_epoch(epoch, metrics)
        self._call("on_train_epoch_end", metrics)

    def _optimizer_step(self, task: Task, window: list[Any], train_metrics: MetricCollection | None) -> None:
        """One optimizer step over ``window`` micro-batches.

        Each micro-batch's mean loss is weighted by its share of the samples in the whole step (across processes),
        so the update equals the full-batch update even when micro-batches differ in size.
        """
        fabric, model, state = self.fabric, self.model, self.state
        sizes = [_batch_size(task, b) for b in window]
        n_local = sum(sizes)
        n_global = n_local
        if self.world_size > 1:
            n_global = int(fabric.all_reduce(torch.tensor(float(n_local), device=fabric.device), reduce_op="sum"))
        weighted_losses = []
        for i, batch in enumerate(window):
            batch = fabric.to_device(batch)
            with fabric.no_backward_sync(model, enabled=self.world_size > 1 and i < len(window) - 1):
                out = task.step(batch, with_predictions=train_metrics is not None)
                fabric.backward(out.loss * (sizes[i] * self.world_size / n_global))
            weighted_losses.append(out.loss.detach().float() * sizes[i])
            if train_metrics is not None:
                with counting_mode():
                    train_metrics.update(out.preds, out.target)
        loss_sum = weighted_losses[0] if len(weighted_losses) == 1 else torch.stack(weighted_losses).sum()
        loss = loss_sum / n_local
        self._call("on_before_optimizer_step", self.optimizer, loss)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        state.step += 1
        state.batches_in_epoch += len(window)
        log_now = state.step % self.config.log_every_n_steps == 0
        loss_value = float(loss) if log_now else None
        self._loss_sum += loss_sum  # stays on the device: no host sync per step
        state.loss_count += n_local
        self.progress.advance(len(window), state.step, loss_value)
        self._call("on_train_step_end", loss)

    @torch.no_grad()
    def _evaluate(self, task: Task, loader: DataLoader, prefix: str, curves: bool) -> Evaluation:
        device = self.fabric.device
        model = task.model
        was_training = model.training
        model.eval()
        metrics = task.metrics().clone(prefix=f"{prefix}/").to(device)
        curve_metrics = {k: m.to(device) for k, m in task.curves().items()} if curves else {}
        loss = MeanMetric().to(device)
        for batch in loader:
            out = task.step(self.fabric.to_device(batch))
            loss.update(out.loss.float(), weight=out.batch_size)
            with counting_mode():
                metrics.update(out.preds, out.target)
                for metric in curve_metrics.values():
                    metric.update(out.preds, out.target)
        model.train(was_training)
        scalars = {f"{prefix}/loss": float(loss.compute())} | {k: float(v) for k, v in metrics.compute().items()}
        computed = {k: _curve_output(m) for k, m in curve_metrics.items()}
        return Evaluation(scalars, computed, getattr(task, "kind", "custom"))

    # ---- helpers ----------------------------------------------------------------------------------------------
    def _default_callbacks(self) -> list[Callback]:
        cfg = self.config
        callbacks: list[Callback] = [NonFiniteLossGuard()]
        if cfg.gradient_clip_val is not None:
            callbacks.append(GradientClipping(cfg.gradient_clip_val, cfg.gradient_clip_algorithm))
        if cfg.early_stopping_patience is not None:
            callbacks.append(EarlyStopping(cfg.monitor, cfg.mode, cfg.early_stopping_patience))
        if self.run_dir is not None and not any(isinstance(c, ModelCheckpoint) for c in self.callbacks):
            callbacks.append(
                ModelCheckpoint(self.run_dir / "checkpoints", cfg.monitor, cfg.mode, cfg.checkpoint_every_n_steps)
            )
        return callbacks

    def _keyed_callbacks(self) -> list[tuple[str, Callback]]:
        seen: dict[str, int] = {}
        keyed = []
        for cb in self._active:
            n = seen[cb.state_key] = seen.get(cb.state_key, 0) + 1
            keyed.append((cb.state_key if n == 1 else f"{cb.state_key}#{n}", cb))
        return keyed

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self._active:
            getattr(callback, hook)(self, *args)

    def _epoch_ordered(self, loader: DataLoader, shuffle: bool) -> DataLoader:
        """Rebuild a loader so its order depends only on (seed, epoch) and each process gets its shard."""
        if loader.batch_size is None or isinstance(loader.dataset, IterableDataset):
            # custom batch sampler or stream: its own set_epoch (if any) decides the order. For exact resume such a
            # loader needs its own ``generator``: without one, each new iterator draws from the global RNG.
            return loader
        sampler = DistributedSampler(
            loader.dataset,
            num_replicas=self.world_size,
            rank=self.fabric.global_rank,
            shuffle=shuffle,
            seed=self.config.seed,
        )
        return DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            sampler=sampler,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            drop_last=loader.drop_last,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            persistent_workers=loader.persistent_workers,
            generator=torch.Generator(),
            prefetch_factor=loader.prefetch_factor if loader.num_workers else None,
        )

    def _set_epoch(self, loader: DataLoader, epoch: int) -> None:
        for obj in (
            getattr(loader, "sampler", None),
            getattr(getattr(loader, "batch_sampler", None), "sampler", None),
            getattr(loader, "batch_sampler", None),
        ):
            if callable(getattr(obj, "set_epoch", None)):
                obj.set_epoch(epoch)
        if isinstance(getattr(loader, "generator", None), torch.Generator):
            loader.generator.manual_seed(self.config.seed + epoch)  # worker seeds: a function of (seed, epoch)

    def _epoch_train_loss(self) -> float:
        loss_sum = self._loss_sum.double() + self.state.loss_sum
        total = torch.stack([loss_sum, torch.tensor(float(self.state.loss_count), device=loss_sum.device).double()])
        if self.world_size > 1:
            total = self.fabric.all_reduce(total, reduce_op="sum")
        return float(total[0] / total[1]) if total[1] > 0 else math.nan

    def _gather_rng(self) -> list[dict[str, Any]]:
        state = rng_state()
        if self.world_size == 1:
            return [state]
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, state)
        return gathered

    def _restore(self, path: str | Path) -> dict[str, Any]:
        remainder = self.fabric.load(Path(path), {"model": self.model, "optimizer": self.optimizer}, weights_only=True)
        if self.ema is not None:
            averaged = remainder.get("averaged_model")
            if averaged is None:  # resuming a run without an average: start it from the checkpoint's weights
                self.ema = WeightEMA(self.model, self.ema.decay, self.ema.warmup)
            else:
                self.ema.load_state_dict(averaged)
        trainer_state = dict(remainder["trainer"])
        self.should_stop = trainer_state.pop("should_stop")
        self.state = TrainState(**trainer_state)
        saved = remainder["callbacks"]
        for key, callback in self._keyed_callbacks():
            if key in saved:
                callback.load_state_dict(saved[key])
        rngs = remainder["rng"]
        return rngs[self.fabric.global_rank] if len(rngs) == self.world_size else rngs[0]

    def _log(self, record: dict[str, float]) -> None:
        if self.run_dir is None or not self.fabric.is_global_zero:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    @contextmanager
    def _evaluation_model(self, task: Task) -> Iterator[None]:
        raw = task.model
        task.model = self.fabric.setup_module(raw)
        try:
            yield
        finally:
            task.model = raw


def _destroy_process_group() -> None:
    """Tear the process group down before interpreter exit: gloo threads still alive then abort the process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _batch_size(task: Task, batch: Any) -> int:
    return int(task.unpack(batch)[1].shape[0])


def _curve_output(metric: Any) -> Any:
    return _to_cpu(metric.bins() if hasattr(metric, "bins") else metric.compute())


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_to_cpu(v) for v in value)
    return value
