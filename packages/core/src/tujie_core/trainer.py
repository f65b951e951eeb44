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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.fabric import Fabric
from lightning.fabric.plugins import Precision
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from pydantic import ValidationError
from torch import Tensor
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, Sampler, SequentialSampler
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
from tujie_core.loop import TrainState
from tujie_core.metrics import counting_mode
from tujie_core.progress import ProgressReporter
from tujie_core.registry import format_validation_error
from tujie_core.tasks import Task


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
        fabric_plugins: Sequence[Any] = (),
        **overrides: Any,
    ) -> None:
        """``plugins`` are tujie plugins (DP-SGD, ...); ``fabric_plugins`` go to Fabric itself (a precision plugin
        such as ``MixedPrecision("16-mixed", "cpu", scaler)``, cluster environments)."""
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
            precision=None if any(isinstance(p, Precision) for p in fabric_plugins) else cfg.precision,
            plugins=[AtomicCheckpointIO(), *fabric_plugins],
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
        self.train_loader: Iterable[Any] | None = None
        self.step_skipped = False  # the last optimizer step was skipped by the gradient scaler
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
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None = None,
        ckpt_path: str | Path | None = None,
    ) -> dict[str, float]:
        """Train until ``max_epochs``/``max_steps`` or a callback stops; resume from ``ckpt_path`` if given.

        Every call is a new training run on the model's current weights: a fresh optimizer, schedule, step count
        and history (so "train the head, then unfreeze and ``fit`` again" works). ``ckpt_path`` continues a run
        that was interrupted. Returns the last epoch's metrics.
        """
        cfg, fabric = self.config, self.fabric
        self.state, self.should_stop = TrainState(), False
        train_loader = self._epoch_ordered(train_loader)
        val_loader = self._epoch_ordered(val_loader) if val_loader is not None else None
        batches = _length(train_loader)
        if batches is None and cfg.max_steps is None:
            raise ConfigError("trainer.max_steps: required when the training data has no length (an iterable dataset)")
        steps_per_epoch = math.ceil(batches / cfg.accumulate_grad_batches) if batches is not None else math.inf
        total_steps = min(cfg.max_steps or math.inf, cfg.max_epochs * steps_per_epoch)
        for plugin in self.plugins:  # architecture changes first: the optimizer must see the final parameters
            task.model = plugin.prepare_model(task.model)
        raw_model = task.model
        optimizer, schedule = task.configure_optimizers(int(total_steps))
        model = raw_model
        for plugin in self.plugins:
            model, optimizer, train_loader = plugin.wrap(self, model, optimizer, train_loader)
        self.model, self.optimizer = fabric.setup(model, optimizer)
        self.train_loader = train_loader
        for plugin in self.plugins:
            plugin.setup(self)
        self.ema = WeightEMA(self.model, cfg.ema_decay) if cfg.ema_decay is not None else None
        self._backward = lambda loss, sample_losses=None, weight=1.0: fabric.backward(loss)
        self._sample_losses = any(plugin.needs_sample_losses for plugin in self.plugins)
        for plugin in reversed(self.plugins):  # the first plugin's backward runs outermost
            self._backward = partial(plugin.backward, self, backward=self._backward)
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
                self._train_epoch(task, self.train_loader, val_loader, train_metrics, total_steps, pending_rng)
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
            return self._evaluate(task, self._epoch_ordered(loader), prefix, curves)

    @torch.no_grad()
    def predict(self, task: Task, loader: Iterable[Any]) -> Tensor:
        """Predictions (probabilities or values) for every batch, labelled or not, concatenated on the CPU, in
        loader order."""
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
            "precision": self.fabric.strategy.precision.state_dict(),  # the gradient scaler under 16-mixed
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
        self.progress.start_epoch(epoch, cfg.max_epochs, _length(loader), state.batches_in_epoch)
        self._call("on_train_epoch_start")
        while state.step < total_steps and not self.should_stop:
            window = list(itertools.islice(iterator, cfg.accumulate_grad_batches))
            if not window:
                break
            loaded = len(window)
            if cfg.micro_batch_size is not None:
                window = [part for batch in window for part in split_batch(batch, cfg.micro_batch_size)]
            self._optimizer_step(task, window, train_metrics, loaded)

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
        for callback in self._active:
            metrics |= callback.epoch_metrics(self)
        record = {"epoch": state.epoch, "step": state.step, **metrics}
        state.history.append(record)
        self._log(record)
        self.progress.end_epoch(epoch, metrics)
        self._call("on_train_epoch_end", metrics)

    def _optimizer_step(
        self, task: Task, window: list[Any], train_metrics: MetricCollection | None, loaded: int
    ) -> None:
        """One optimizer step over ``window`` micro-batches (``loaded`` batches from the loader).

        Each micro-batch's mean loss is weighted by its share of the items (``Task.num_items``: samples, tokens,
        voxels) in the whole step across processes, so the update equals the full-batch update even when
        micro-batches differ in size. An empty micro-batch (Poisson sampling can draw one) adds nothing; in a
        single process it is not run at all, so its mean over no items cannot make the loss NaN.
        """
        fabric, model, state = self.fabric, self.model, self.state
        sizes = [task.num_items(b) for b in window]
        n_local = sum(sizes)
        n_global = n_local
        if self.world_size > 1:
            n_global = int(fabric.all_reduce(torch.tensor(float(n_local), device=fabric.device), reduce_op="sum"))
        weighted_losses = []
        for i, batch in enumerate(window):
            if sizes[i] == 0 and self.world_size == 1:
                continue
            batch = fabric.to_device(batch)
            with fabric.no_backward_sync(model, enabled=self.world_size > 1 and i < len(window) - 1):
                # sample_losses only when a plugin asks: Task subclasses written before it keep working
                asked = {"sample_losses": True} if self._sample_losses else {}
                out = task.step(batch, train_metrics is not None, **asked)
                weight = sizes[i] * self.world_size / max(n_global, 1)
                per_sample = None if out.sample_losses is None else out.sample_losses * weight
                self._backward(out.loss * weight, sample_losses=per_sample, weight=weight)
            weighted_losses.append(out.loss.detach().float() * sizes[i])
            if train_metrics is not None:
                with counting_mode():
                    train_metrics.update(out.preds, out.target)
        if not weighted_losses:
            weighted_losses.append(torch.zeros((), device=fabric.device))
        loss_sum = weighted_losses[0] if len(weighted_losses) == 1 else torch.stack(weighted_losses).sum()
        loss = loss_sum / max(n_local, 1)
        self._call("on_before_optimizer_step", self.optimizer, loss)
        scaler = getattr(fabric.strategy.precision, "scaler", None)
        scale = scaler.get_scale() if scaler is not None else None
        self.optimizer.step()
        # a gradient scaler skips the update when gradients overflow and lowers its scale: nothing was learnt, so
        # the schedule and the weight average must not move either
        self.step_skipped = scaler is not None and scaler.get_scale() < scale
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None and not self.step_skipped:
            self.ema.update(self.model)
        state.step += 1
        state.batches_in_epoch += loaded
        log_now = state.step % self.config.log_every_n_steps == 0
        loss_value = float(loss) if log_now else None
        self._loss_sum += loss_sum  # stays on the device: no host sync per step
        state.loss_count += n_local
        self.progress.advance(loaded, state.step, loss_value)
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
            loss.update(out.loss.float(), weight=out.num_items)
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

    def _epoch_ordered(self, loader: Iterable[Any]) -> Iterable[Any]:
        """Make a loader's order depend only on (seed, epoch) and give each process its share.

        PyTorch's default samplers (``shuffle=True``/``False``) become a seeded ``DistributedSampler``; any other
        sampler (``WeightedRandomSampler``, ``SubsetRandomSampler``, your own) is kept, reseeded every epoch when it
        has a ``generator``, and wrapped for distributed runs so each process draws its own share. Batch samplers,
        iterable datasets and loaders that are not ``DataLoader``s are used as they are: they shard and order
        themselves (a ``set_epoch`` method is called every epoch, on a training loader's dataset too).
        """
        if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
            return loader
        if loader.batch_size is None:
            return loader
        sampler: Sampler = loader.sampler
        world, rank, seed = self.world_size, self.fabric.global_rank, self.config.seed
        if _is_default_sampler(sampler):
            shuffle = isinstance(sampler, RandomSampler)
            sampler = DistributedSampler(loader.dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
        elif world > 1:
            sampler = DistributedSamplerWrapper(sampler, num_replicas=world, rank=rank, shuffle=False)
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

    def _set_epoch(self, loader: Iterable[Any], epoch: int) -> None:
        sampler = getattr(loader, "sampler", None)
        inner = getattr(getattr(sampler, "dataset", None), "_sampler", sampler)  # inside DistributedSamplerWrapper
        if hasattr(inner, "generator"):
            # a custom random sampler draws from its own generator, seeded by (seed, epoch) on every process
            inner.generator = torch.Generator().manual_seed(self.config.seed + epoch)
        for obj in (
            loader,
            getattr(loader, "dataset", None),  # per-epoch augmentation seeded by (seed, epoch, index): exact resume
            sampler,
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
        self.fabric.strategy.precision.load_state_dict(remainder.get("precision", {}))
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


def split_batch(batch: Any, size: int) -> list[Any]:
    """Cut a batch into consecutive micro-batches of at most ``size`` samples along the first dimension.

    Tensors, sequences (tuples, lists, lists of strings) and mappings of them are cut; a batch of another type (a
    graph batch) raises ConfigError, since only its own library knows how to cut it.
    """
    n = _batch_length(batch)
    if n <= size:
        return [batch]
    return [_slice(batch, start, start + size) for start in range(0, n, size)]


def _batch_length(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return len(batch)
    if isinstance(batch, Mapping) and batch:
        return _batch_length(next(iter(batch.values())))
    if isinstance(batch, tuple | list) and batch:
        first = batch[0]
        return _batch_length(first) if isinstance(first, Tensor | Mapping | tuple | list) else len(batch)
    raise ConfigError(
        f"trainer.micro_batch_size: cannot split a batch of type {type(batch).__name__}; "
        "unset it and lower the batch size instead"
    )


def _slice(batch: Any, start: int, stop: int) -> Any:
    if isinstance(batch, Tensor):
        return batch[start:stop]
    if isinstance(batch, Mapping):
        return {key: _slice(value, start, stop) for key, value in batch.items()}
    if batch and isinstance(batch[0], Tensor | Mapping | tuple | list):
        return type(batch)(_slice(part, start, stop) for part in batch)
    return batch[start:stop]


def _destroy_process_group() -> None:
    """Tear the process group down before interpreter exit: gloo threads still alive then abort the process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _length(loader: Iterable[Any]) -> int | None:
    """Batches per epoch, or None for a stream without a length."""
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _is_default_sampler(sampler: Sampler) -> bool:
    """PyTorch's samplers for ``shuffle=False``/``shuffle=True`` (without replacement or a sample count)."""
    if type(sampler) is SequentialSampler:
        return True
    return type(sampler) is RandomSampler and not sampler.replacement and sampler._num_samples is None


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
