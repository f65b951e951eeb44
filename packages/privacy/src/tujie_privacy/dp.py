"""DP-SGD for any run that trains with the core Trainer: the ``dp`` plugin.

>>> plugins: [{name: dp, epsilon: 3, max_grad_norm: 1.0}]          # a run config   # doctest: +SKIP
>>> tujie train run.yaml --dp epsilon=3                             # the CLI        # doctest: +SKIP
>>> Trainer(plugins=[DPSGD(epsilon=3)]).fit(task, loader)           # Python         # doctest: +SKIP

What it does, on Opacus: Poisson sampling of every logical batch (the data's ``batch_size`` is its expected
size), per-sample gradient clipping to ``max_grad_norm`` (see ``clipping`` below), Gaussian noise of
``noise_multiplier × max_grad_norm`` once per logical batch, and a privacy accountant (PRV by default, RDP or GDP).
``epsilon`` alone finds the noise for the planned steps; ``noise_multiplier`` fixes it (with ``epsilon`` as a
budget, or none). The run stops before a step would spend more than ``epsilon``; ε after every epoch goes to the
metrics log as ``dp/epsilon``; checkpoints carry the accountant, so a resumed run continues it. Memory:
``trainer.micro_batch_size`` cuts each logical batch into physical ones (clipped one by one, noised once), so the
privacy batch is not capped by memory.

Per-sample gradients (``clipping``): ``ghost`` (Opacus' ghost clipping: no per-sample gradient is stored for linear
and embedding layers) and ``hooks`` (Opacus' per-sample gradient hooks) take row ``i`` of every layer's input to be
sample ``i``; ``loop`` makes no such assumption: one backward pass per sample of the task's per-sample losses, each
sample's gradient written into ``p.grad_sample`` for Opacus' clipping, noise and accounting, on the plain model (no
hooks, so functional layers such as ``F.embedding_bag`` count too). It is exact for any model whose samples do not
share a batch row, graphs above all (a PyG batch: a sample is a graph, the layers' rows are its atoms or edges),
and costs about one backward pass per sample per batch: fine for small GNNs (a D-MPNN on molecule batches of 50),
slow for big models. It assumes what every per-sample method assumes: a sample's loss depends on that sample only.
``auto`` (the default) takes ``loop`` for graph batches (a collated first sample with an integer ``num_graphs``,
as a torch-geometric ``Batch`` has) and ``ghost`` for the rest; ``hooks`` or ``ghost`` asked for on graph batches
is refused, since it would clip per atom or edge, not per graph, and bound nothing. Poisson sampling of graph
batches draws an empty batch as a graph batch of no graphs (the structure of the data's batches, no rows): the
Trainer runs no forward pass for it, and the step (noise only) counts in the accountant, as in Opacus.

Refused, with the reason: several processes, gradient accumulation (use ``data.batch_size`` for the logical
batch and ``trainer.micro_batch_size`` for memory), mixed precision, models with a layer Opacus cannot compute
per-sample gradients for (hooks and ghost; loop needs no per-layer support). BatchNorm (and other layers with a
known private replacement) is replaced before training: ``BatchNorm → GroupNorm``, named in the report.

Caveat: sampling and noise come from seeded generators, so a run is reproducible and resumes exactly; Opacus'
``secure_mode`` (a cryptographically secure generator) is the option for a deployment where the seed could leak.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.data_loader import DPDataLoader
from opacus.grad_sample import GradSampleModule, GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping
from opacus.validators import ModuleValidator
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, IterableDataset

from tujie_core import PLUGINS, ConfigError, Plugin
from tujie_core.checkpoint import rng_state, set_rng_state
from tujie_core.registry import format_validation_error

if TYPE_CHECKING:
    from tujie_core import Trainer

DP_FILE = "dp.json"
FULL_PRECISION = ("32-true", "32", "64-true", "64")


class DPConfig(BaseModel):
    """The dp plugin's options (``plugins: [{name: dp, ...}]`` or ``--dp key=value,...``)."""

    model_config = ConfigDict(extra="forbid")

    epsilon: float | None = Field(None, gt=0, description="target ε (noise found for the planned steps) or budget")
    delta: float | None = Field(None, gt=0, lt=1, description="default: min(1e-5, 1/(2N)), below 1/N")
    noise_multiplier: float | None = Field(None, ge=0, description="fixed σ instead of one found from epsilon")
    max_grad_norm: float = Field(1.0, gt=0, description="per-sample clipping norm C")
    accountant: Literal["prv", "rdp", "gdp"] = "prv"
    poisson_sampling: bool = True
    clipping: Literal["auto", "ghost", "hooks", "loop"] = Field(
        "auto",
        description="ghost: per-sample norms without per-sample gradients; hooks: Opacus' classic; loop: one "
        "backward pass per sample (any batch layout, graphs); auto: loop for graph batches, else ghost",
    )

    @model_validator(mode="after")
    def _budget_or_noise(self) -> DPConfig:
        if self.epsilon is None and self.noise_multiplier is None:
            raise ValueError("set epsilon (the privacy budget) or noise_multiplier")
        return self


def default_delta(n: int) -> float:
    """δ below 1/N: 1e-5 (Opacus' MNIST figures) or 1/(2N) for larger data (Li et al. 2021's SST-2 figures)."""
    return min(1e-5, 1.0 / (2 * n))


def epsilon_after(accountant: str, history: list[tuple[float, float, int]], delta: float) -> float:
    """ε at ``delta`` after the steps in ``history`` (``(σ, q, steps)`` entries), by ``accountant``."""
    if not history or all(steps == 0 for _, _, steps in history):
        return 0.0
    if any(sigma == 0 and steps > 0 for sigma, _, steps in history):
        return math.inf  # no noise: no privacy
    entries = tuple((float(s), float(q), int(k)) for s, q, k in history if k > 0)
    return _epsilon(accountant, entries, float(delta))


@lru_cache(maxsize=256)
def _epsilon(accountant: str, history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    """The accountant's ε, once per history (a run asks for it per epoch, in its facts and in its report)."""
    acc = create_accountant(mechanism=accountant)
    acc.history = list(history)
    return float(acc.get_epsilon(delta=delta))


def _fixer(module: nn.Module) -> Any:
    """Opacus' replacement for a layer, except BatchNorm1d → GroupNorm(1, C): Opacus' min(32, C) groups leave one
    value per group on ``(batch, features)`` inputs, which GroupNorm cannot normalise."""
    if isinstance(module, nn.BatchNorm1d):
        return lambda m: nn.GroupNorm(1, m.num_features, affine=m.affine)
    return ModuleValidator.FIXERS.get(type(module))


def fix_model(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Replace, in place, every layer that has a private equivalent (BatchNorm → GroupNorm, LSTM → DPLSTM, ...);
    returns the model and one line per replacement. ConfigError names a layer that cannot be trained privately."""
    changes: list[str] = []
    if _fixer(model) is not None:
        fixed = _fixer(model)(model)
        return fixed, [f"model: {_describe(model)} → {_describe(fixed)}"]
    for name, module in list(model.named_modules()):
        fixer = _fixer(module)
        if fixer is None or not name:
            continue
        replacement = fixer(module)
        device = next(module.parameters(), torch.empty(0)).device
        replacement.to(device)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, replacement)
        changes.append(f"{name}: {_describe(module)} → {_describe(replacement)}")
    problems = []
    for name, module in model.named_modules():
        check = ModuleValidator.VALIDATORS.get(type(module))
        for error in check(module) if check is not None else []:
            problems.append(f"{name or 'model'} ({type(module).__name__}): {str(error).split('. ')[0]}")
    if problems:
        raise ConfigError("dp: the model cannot be trained with differential privacy: " + "; ".join(problems))
    return model, changes


def _describe(module: nn.Module) -> str:
    if isinstance(module, nn.GroupNorm):
        return f"GroupNorm({module.num_groups}, {module.num_channels})"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return f"{type(module).__name__}({module.num_features})"
    return type(module).__name__


# ---- graph batches: a sample is a graph, a layer's rows are its atoms or edges ---------------------------------
def is_graph_batch(batch: Any) -> bool:
    """A batch that holds graphs (a torch-geometric ``Batch``: an integer ``num_graphs``), or a tuple, list or
    mapping with one: its layers see one row per node or edge, not per sample."""
    if isinstance(getattr(batch, "num_graphs", None), int) and not isinstance(batch, Tensor):
        return True
    if isinstance(batch, Mapping):
        return any(is_graph_batch(v) for v in batch.values())
    if isinstance(batch, tuple | list):
        return any(is_graph_batch(v) for v in batch)
    return False


def empty_batch_like(batch: Any) -> Any:
    """A batch of no samples with the structure of ``batch`` and none of its values: graph batches with no graphs
    (every node- and edge-level tensor with no rows, ``ptr = [0]``), tensors with a first dimension of 0, per-sample
    lists empty. TypeError for anything else (a value that could carry data into an empty batch)."""
    if isinstance(batch, Tensor):
        return batch.new_empty((0, *batch.shape[1:]))
    if is_graph_batch(batch) and hasattr(batch, "__cat_dim__") and callable(getattr(batch, "keys", None)):
        return _empty_graph_batch(batch)
    if isinstance(batch, Mapping):
        return {key: empty_batch_like(value) for key, value in batch.items()}
    if isinstance(batch, tuple | list):
        if all(isinstance(v, str) for v in batch):
            return type(batch)()
        return type(batch)(empty_batch_like(v) for v in batch)
    raise TypeError(f"cannot make an empty batch holding a {type(batch).__name__}")


def _empty_graph_batch(batch: Any) -> Any:
    empty = copy.copy(batch)  # torch-geometric copies its storage: ``batch`` is left as it is
    for key in list(batch.keys()):
        value = batch[key]
        if key == "ptr":
            empty[key] = torch.zeros(1, dtype=value.dtype, device=value.device)
        elif isinstance(value, Tensor):
            dim = batch.__cat_dim__(key, value) if value.ndim else 0
            shape = list(value.shape) or [0]
            shape[dim] = 0
            empty[key] = value.new_empty(shape)  # fresh storage: no value of the template survives
        elif isinstance(value, list | tuple):
            empty[key] = type(value)()
        elif isinstance(value, int) and key == "num_nodes":
            empty[key] = 0
        else:
            raise TypeError(f"cannot make an empty graph batch: attribute {key!r} is a {type(value).__name__}")
    empty._num_graphs = 0
    for name in ("_slice_dict", "_inc_dict"):  # how to split the batch back into graphs: into none
        table = getattr(batch, name, None)
        if isinstance(table, dict):
            setattr(
                empty,
                name,
                {
                    key: None if v is None else torch.zeros(1 if name == "_slice_dict" else 0, dtype=v.dtype)
                    for key, v in table.items()
                },
            )
    if empty.num_graphs != 0:
        raise TypeError("cannot make an empty graph batch")
    return empty


class WithEmptyBatch:
    """A collate function for Poisson sampling of batches that Opacus' empty-batch collate cannot rebuild (graphs):
    the data's own collate for a draw of samples, a copy of ``empty`` (a batch of no samples, see
    :func:`empty_batch_like`) for an empty draw."""

    def __init__(self, collate: Any, empty: Any) -> None:
        self.collate, self.empty = collate, empty

    def __call__(self, items: list[Any]) -> Any:
        return self.collate(items) if len(items) else copy.deepcopy(self.empty)


def _probe(dataset: Any, collate: Any) -> Any:
    """The first sample collated alone (None when that fails: the run shows the error where it always did), with
    every random generator left as it was (a random transform or collate must not shift the run)."""
    state = rng_state()
    try:
        return collate([dataset[0]])
    except Exception:
        return None
    finally:
        set_rng_state(state)


def _is_graph_sample(dataset: Any) -> bool:
    """The dataset's samples are torch-geometric graphs (``Data``), told by their class, without importing it."""
    state = rng_state()
    try:
        item = dataset[0]
    except Exception:
        return False
    finally:
        set_rng_state(state)
    return any(cls.__module__.startswith("torch_geometric.data") for cls in type(item).__mro__)


class _LogicalBatchMixin:
    """Clip after every physical (micro-)batch, add noise and step once per logical batch: Opacus'
    ``BatchMemoryManager`` in the core Trainer's terms, where a logical batch is one optimizer step."""

    params: list[Tensor]
    expected_batch_size: int
    step_hook: Any
    original_optimizer: Optimizer

    end_micro_batch: Any  # by the subclass: move the micro-batch's clipped gradients into ``summed_grad``
    add_noise: Any  # Opacus' optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:  # keeps the clipped sum of the logical batch
        for p in self.params:
            p.grad_sample = None
        self.original_optimizer.zero_grad(set_to_none)

    def pre_step(self, closure: Any = None) -> bool:
        self.end_micro_batch()
        for p in self.params:
            if getattr(p, "summed_grad", None) is None:  # an empty Poisson batch is noised like any other
                p.summed_grad = torch.zeros_like(p)
        self.add_noise()
        for p in self.params:
            p.grad /= self.expected_batch_size
        if self.step_hook:
            self.step_hook(self)
        return True

    def step(self, closure: Any = None) -> Any:
        if closure is not None:
            with torch.enable_grad():
                closure()
        self.pre_step()
        result = self.original_optimizer.step()
        for p in self.params:
            p.summed_grad = None
        return result


class _HooksOptimizer(_LogicalBatchMixin, DPOptimizer):
    def end_micro_batch(self) -> None:
        if any(getattr(p, "grad_sample", None) is not None for p in self.params):
            self.clip_and_accumulate()
        for p in self.params:
            p.grad_sample = None
            p.grad = None


class _LoopOptimizer(_HooksOptimizer):
    """Clips the per-sample gradients that :meth:`DPSGD.backward` writes into ``p.grad_sample`` (loop mode) with
    Opacus' own clipping, noise and scaling."""


class _GhostOptimizer(_LogicalBatchMixin, DPOptimizerFastGradientClipping):
    def end_micro_batch(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.summed_grad = p.grad.detach() if p.summed_grad is None else p.summed_grad + p.grad
                p.grad = None


@PLUGINS.register("dp")
class DPSGD(Plugin):
    """Differentially private training of a Trainer run (see the module docstring); options: :class:`DPConfig`."""

    def __init__(self, **options: Any) -> None:
        try:
            self.config = DPConfig.model_validate(options)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "plugins.dp", DPConfig)) from None
        self.needs_sample_losses = self.config.clipping != "hooks"  # resolved in wrap (auto: ghost or loop)
        self.clipping: str = self.config.clipping
        self.clipping_note = ""
        self.changes: list[str] = []
        self.history: list[tuple[float, float, int]] = []
        self.noise_multiplier = self.config.noise_multiplier
        self.sample_rate = 0.0
        self.delta = self.config.delta
        self.dataset_size = 0
        self.expected_batch_size = 0
        self.allowed_steps: float = math.inf
        self.budget_stop: str | None = None
        self.run_dir: Path | None = None
        self.seed = 0

    @property
    def state_key(self) -> str:
        return "dp"

    @property
    def steps(self) -> int:
        return sum(steps for _, _, steps in self.history)

    @property
    def epsilon(self) -> float:
        """ε spent so far, at δ."""
        return epsilon_after(self.config.accountant, self.history, self.delta or 1e-5)

    # ---- plugin hooks -------------------------------------------------------------------------------------------
    def prepare_model(self, model: nn.Module) -> nn.Module:
        model, changes = fix_model(model)
        model._tujie_dp_changes = [*getattr(model, "_tujie_dp_changes", []), *changes]
        return model

    def wrap(
        self, trainer: Trainer, model: nn.Module, optimizer: Optimizer, train_loader: Iterable[Any]
    ) -> tuple[nn.Module, Optimizer, Iterable[Any]]:
        cfg, tc = self.config, trainer.config
        if trainer.world_size > 1:
            raise ConfigError("dp: one process only (several processes need Opacus' distributed sampler)")
        if tc.accumulate_grad_batches > 1:
            raise ConfigError(
                "dp: trainer.accumulate_grad_batches must be 1; data.batch_size is the logical (privacy) batch, "
                "and trainer.micro_batch_size bounds memory"
            )
        if str(tc.precision) not in FULL_PRECISION:
            raise ConfigError(f"dp: trainer.precision must be full (32-true), got {tc.precision}")
        if not isinstance(train_loader, DataLoader) or isinstance(train_loader.dataset, IterableDataset):
            raise ConfigError("dp: the training data must be a DataLoader over a dataset with a length")
        collate = train_loader.collate_fn
        if getattr(collate, "mixes_samples", False):
            raise ConfigError(
                f"dp: the training batches mix samples ({getattr(collate, 'mixing', 'mixup/cutmix')}), so one record "
                "changes several training samples and per-sample clipping no longer bounds it; "
                f"{getattr(collate, 'unmix', 'turn mixup and cutmix off')}"
            )
        batch_size = train_loader.batch_size or getattr(train_loader.batch_sampler, "batch_size", None)
        if not batch_size:
            raise ConfigError("dp: the training loader has no batch size to take as the expected logical batch")
        self.changes = list(getattr(model, "_tujie_dp_changes", []))
        self.dataset_size = n = len(train_loader.dataset)  # type: ignore[arg-type]
        self.expected_batch_size = batch_size
        self.sample_rate = q = min(1.0, batch_size / n)
        self.delta = cfg.delta if cfg.delta is not None else default_delta(n)
        self.seed = tc.seed
        probe = _probe(train_loader.dataset, collate)
        graphs = _is_graph_sample(train_loader.dataset) or is_graph_batch(probe)
        self._choose_clipping(graphs)
        if cfg.poisson_sampling:  # the trainer reseeds the generator from (seed, epoch): exact resume
            train_loader = DPDataLoader(
                train_loader.dataset,
                sample_rate=q,
                collate_fn=train_loader.collate_fn,
                generator=torch.Generator().manual_seed(tc.seed),
                num_workers=train_loader.num_workers,
                pin_memory=train_loader.pin_memory,
                worker_init_fn=train_loader.worker_init_fn,
            )
            if graphs:  # Opacus' empty batch is built of tensors, dicts and lists only
                try:
                    empty = empty_batch_like(probe)
                except TypeError as exc:
                    raise ConfigError(f"dp: Poisson sampling can draw an empty batch, and {exc}") from None
                train_loader.collate_fn = WithEmptyBatch(collate, empty)
        steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
        planned = min(tc.max_steps or math.inf, tc.max_epochs * steps_per_epoch)
        self.planned_steps = int(planned)
        if self.noise_multiplier is None:
            try:
                self.noise_multiplier = get_noise_multiplier(
                    target_epsilon=cfg.epsilon,
                    target_delta=self.delta,
                    sample_rate=q,
                    steps=self.planned_steps,
                    accountant=cfg.accountant,
                )
            except ValueError as exc:
                raise ConfigError(f"dp: epsilon={cfg.epsilon}: {exc}") from None
        clip = cfg.max_grad_norm
        try:
            if self.clipping == "loop":  # the plain model: per-sample gradients come from backward passes
                module: nn.Module = model
                dp_optimizer: Optimizer = _LoopOptimizer(
                    optimizer, noise_multiplier=self.noise_multiplier, max_grad_norm=clip, expected_batch_size=1
                )
            elif self.clipping == "ghost":
                module = GradSampleModuleFastGradientClipping(
                    model, max_grad_norm=clip, use_ghost_clipping=True, loss_reduction="mean"
                )
                dp_optimizer = _GhostOptimizer(
                    optimizer, noise_multiplier=self.noise_multiplier, max_grad_norm=clip, expected_batch_size=1
                )
            else:
                module = GradSampleModule(model, batch_first=True, loss_reduction="mean")
                dp_optimizer = _HooksOptimizer(
                    optimizer, noise_multiplier=self.noise_multiplier, max_grad_norm=clip, expected_batch_size=1
                )
        except (NotImplementedError, ValueError) as exc:
            raise ConfigError(f"dp: the model cannot be trained with differential privacy: {exc}") from None
        dp_optimizer.expected_batch_size = self.expected_batch_size
        self.module, self.optimizer = module, dp_optimizer
        return module, dp_optimizer, train_loader

    def setup(self, trainer: Trainer) -> None:
        self.run_dir = trainer.run_dir

    def backward(
        self,
        trainer: Trainer,
        loss: Tensor,
        *,
        backward: Any,
        sample_losses: Tensor | None = None,
        weight: float = 1.0,
    ) -> None:
        # per-sample gradients of the micro-batch's own mean loss: the step's weighting does not apply, since the
        # optimizer sums clipped gradients and divides by the expected logical batch size
        if self.clipping in ("ghost", "loop") and sample_losses is None:
            other = (
                "set clipping=hooks"
                if self.clipping == "ghost"
                else "give the task per-sample losses (Task.sample_losses)"
            )
            raise ConfigError(
                f"dp: {self.clipping} clipping needs one loss per sample and this task cannot split its loss "
                f"(class weights?); {other}"
            )
        if self.clipping == "loop":
            self._loop_backward(sample_losses / weight)  # type: ignore[operator]
            self.optimizer.end_micro_batch()
            return
        try:
            if self.clipping == "ghost":
                DPTensorFastGradientClipping(self.module, self.optimizer, sample_losses / weight, "mean").backward()
            else:
                backward(loss / weight, sample_losses=sample_losses, weight=1.0)
            self.optimizer.end_micro_batch()
        except AttributeError as exc:
            if "_norm_sample" not in str(exc) and "grad_sample" not in str(exc):
                raise
            unused = [
                name
                for name, p in self.module.named_parameters()
                if p.requires_grad and getattr(p, "_norm_sample", getattr(p, "grad_sample", None)) is None
            ]
            raise ConfigError(
                "dp: trainable parameters that the loss does not use have no per-sample gradient; freeze them: "
                + ", ".join(unused[:5])
                + (f" (+{len(unused) - 5} more)" if len(unused) > 5 else "")
            ) from None
        except RuntimeError as exc:
            if "stack expects each tensor to be equal size" not in str(exc):
                raise
            raise ConfigError(
                "dp: a trainable layer sees the whole batch at once (one input row for all samples, as BERT's "
                "position embeddings do), so it has no per-sample gradient; freeze it "
                "(text classifiers: transfer.freeze_embeddings=true) or set clipping=loop (one backward pass per "
                "sample: exact, slower)"
            ) from None

    def on_fit_start(self, trainer: Trainer) -> None:
        planned = max(self.planned_steps, self.steps)
        allowed = self._allowed_steps(self.steps, planned)
        self.allowed_steps = allowed if allowed < planned else math.inf  # the planned run fits: nothing to stop
        self._check_budget(trainer)

    def on_train_step_end(self, trainer: Trainer, loss: Tensor) -> None:
        if self.history and self.history[-1][:2] == (self.noise_multiplier, self.sample_rate):
            sigma, q, steps = self.history[-1]
            self.history[-1] = (sigma, q, steps + 1)
        else:
            self.history.append((float(self.noise_multiplier), float(self.sample_rate), 1))
        self._check_budget(trainer)

    def epoch_metrics(self, trainer: Trainer) -> dict[str, float]:
        return {"dp/epsilon": self.epsilon}

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.run_dir is not None and trainer.fabric.is_global_zero:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / DP_FILE).write_text(json.dumps(self.facts(), indent=2), encoding="utf-8")

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [list(entry) for entry in self.history],
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "delta": self.delta,
            "budget_stop": self.budget_stop,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A resumed run keeps its noise and continues the accountant's history (never restarts it)."""
        self.history = [(float(s), float(q), int(k)) for s, q, k in state["history"]]
        self.noise_multiplier = float(state["noise_multiplier"])
        self.optimizer.noise_multiplier = self.noise_multiplier
        self.sample_rate, self.delta, self.budget_stop = state["sample_rate"], state["delta"], state["budget_stop"]

    def report_section(self, trainer: Trainer) -> str | None:
        f = self.facts()
        lines = [
            f"Differential privacy (DP-SGD, Opacus {f['versions']['opacus']}): ε = {f['epsilon']:.3f} at "
            f"δ = {f['delta']:.3g} ({f['accountant'].upper()} accountant) after {f['steps']} steps; "
            f"σ = {f['noise_multiplier']:.4g}, clipping norm C = {f['max_grad_norm']}, sampling rate "
            f"q = {f['sample_rate']:.4g} (expected batch {f['expected_batch_size']} of {f['dataset_size']}), "
            f"{'Poisson sampling' if f['poisson_sampling'] else 'shuffled batches (the ε assumes Poisson sampling)'}, "
            f"{f['clipping']} clipping{self.clipping_note}."
        ]
        if f["target_epsilon"] is not None:
            lines.append(f"Budget: ε ≤ {f['target_epsilon']}.")
        if f["budget_stop"]:
            lines.append(f["budget_stop"])
        if f["model_changes"]:
            lines.append("Model changed for DP: " + "; ".join(f["model_changes"]) + ".")
        return " ".join(lines)

    # ---- helpers ------------------------------------------------------------------------------------------------
    def _choose_clipping(self, graphs: bool) -> None:
        """``auto``: loop for graph batches, ghost otherwise; hooks or ghost on graph batches: ConfigError (they take
        every node or edge row for a sample, so the clipping would bound no molecule's contribution)."""
        asked, self.clipping_note = self.config.clipping, ""
        if graphs and asked in ("ghost", "hooks"):
            raise ConfigError(
                f"dp: clipping={asked} takes each row of a layer's input for a sample, but these batches are graphs "
                "(a sample is a graph; the rows are its nodes and edges), so it would clip per node or edge and bound "
                "no sample's contribution; set clipping=loop (one backward pass per graph) or leave it at auto"
            )
        self.clipping = asked if asked != "auto" else ("loop" if graphs else "ghost")
        if asked == "auto" and graphs:
            self.clipping_note = " (one backward pass per graph: the batches are graphs, a sample is a graph)"
        elif self.clipping == "loop":
            self.clipping_note = " (one backward pass per sample)"
        self.needs_sample_losses = self.clipping in ("ghost", "loop")

    def _loop_backward(self, sample_losses: Tensor) -> None:
        """Each sample's gradient by its own backward pass, into ``p.grad_sample`` (B, *p.shape): a parameter that a
        sample does not reach gets zeros for it. B passes through the batch's graph (retained until the last)."""
        params = self.optimizer.params  # type: ignore[attr-defined]
        n = len(sample_losses)
        per_sample = [p.new_zeros((n, *p.shape)) for p in params]
        for i in range(n):
            grads = torch.autograd.grad(
                sample_losses[i], params, retain_graph=i < n - 1, allow_unused=True, materialize_grads=True
            )
            for buffer, grad in zip(per_sample, grads, strict=True):
                buffer[i] = grad
        for p, buffer in zip(params, per_sample, strict=True):
            p.grad_sample = buffer

    def facts(self) -> dict[str, Any]:
        """The accounting facts of the run (what ``dp.json`` holds)."""
        return {
            "mechanism": "DP-SGD",
            "accountant": self.config.accountant,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "target_epsilon": self.config.epsilon,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.config.max_grad_norm,
            "sample_rate": self.sample_rate,
            "expected_batch_size": self.expected_batch_size,
            "dataset_size": self.dataset_size,
            "steps": self.steps,
            "history": [list(entry) for entry in self.history],
            "poisson_sampling": self.config.poisson_sampling,
            "clipping": self.clipping,
            "model_changes": self.changes,
            "budget_stop": self.budget_stop,
            "seed": self.seed,
            "versions": {name: _version(name) for name in ("opacus", "torch", "tujie-privacy", "tujie-core")},
        }

    def _allowed_steps(self, done: int, planned: int) -> float:
        """The most steps whose ε stays within the budget (σ and q fixed), searched up to ``planned``."""
        budget = self.config.epsilon
        if budget is None:
            return math.inf
        entry = (float(self.noise_multiplier), float(self.sample_rate))

        def within(k: int) -> bool:
            return epsilon_after(self.config.accountant, [*self.history, (*entry, k - done)], self.delta) <= budget

        if within(planned):
            return planned
        low, high = done, planned  # within(low) holds unless the history already spent the budget
        if not within(low):
            return done
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if within(mid) else (low, mid)
        return low

    def _check_budget(self, trainer: Trainer) -> None:
        if self.steps >= self.allowed_steps and not trainer.should_stop:
            trainer.should_stop = True
            self.budget_stop = (
                f"Stopped by the privacy budget after {self.steps} steps: one more step would spend more than "
                f"ε = {self.config.epsilon} (spent: {self.epsilon:.3f})."
            )


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
