"""Run configuration: pydantic models with defaults, loaded from YAML with errors that name the field."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tujie_core.errors import ConfigError


class YAMLLoader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-4`` as a float (YAML 1.2; PyYAML's 1.1 rules make it a string)."""


YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+"
        r"(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=YAMLLoader)


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ComponentSpec(BaseModel):
    """``{name: <registry name>, **params}``: a registry entry and its keyword arguments."""

    model_config = ConfigDict(extra="allow")

    name: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DataSpec(ComponentSpec):
    """A dataset from the ``datasets`` registry plus loader settings."""

    batch_size: int = Field(64, ge=1)
    eval_batch_size: int | None = Field(None, ge=1)
    num_workers: int = Field(0, ge=0)


class SchedulerSpec(ComponentSpec):
    """A learning-rate schedule from the ``schedulers`` registry."""


# Fabric's precision names (bf16-mixed: bfloat16 autocast, fast on GPUs and on CPUs with AVX-512 BF16 or AMX)
Precision = Literal[
    "32-true",
    "64-true",
    "16-mixed",
    "bf16-mixed",
    "16-true",
    "bf16-true",
    "transformer-engine",
    "transformer-engine-float16",
]


class TrainerConfig(Strict):
    """Everything the Trainer needs besides the task and the data."""

    max_epochs: int = Field(10, ge=1)
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; stops before max_epochs if reached")
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    precision: Precision = "32-true"
    accumulate_grad_batches: int = Field(1, ge=1)
    micro_batch_size: int | None = Field(
        None,
        ge=1,
        description="split every batch into micro-batches of at most this many samples, accumulated into one "
        "optimizer step: memory no longer grows with the batch size",
    )
    gradient_clip_val: float | None = Field(None, gt=0)
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="keep an EMA of the weights (e.g. 0.999); validation and best.ckpt use it"
    )
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    early_stopping_patience: int | None = Field(None, ge=1)
    checkpoint_every_n_steps: int | None = Field(None, ge=1)
    log_every_n_steps: int = Field(50, ge=1)
    train_metrics: bool = True
    deterministic: bool = False
    seed: int = 0
    progress: Literal["auto", "rich", "plain", "none"] = "auto"


class ParamSpec(Strict):
    """One searched hyperparameter: ``float``/``int`` in ``[low, high]`` (``log`` scale, ``step``) or ``choices``."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs 'low' and 'high'")
        if self.low >= self.high:
            raise ValueError(f"'low' ({self.low}) must be below 'high' ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale parameter needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("'log' and 'step' cannot be combined")
        return self


class TuneSpec(Strict):
    """Hyperparameter search over dotted config keys (``optimizer.lr``, ``model.hidden``, ``data.batch_size``)."""

    space: dict[str, ParamSpec]
    metric: str | None = Field(None, description="objective; default: trainer.monitor")
    direction: Literal["minimize", "maximize"] | None = Field(None, description="default: from trainer.mode")
    sampler: ComponentSpec = ComponentSpec(name="tpe")
    pruner: ComponentSpec | None = ComponentSpec(name="median")
    storage: str | None = Field(None, description="RDB URL; default: sqlite file in the tune folder")
    study_name: str | None = Field(None, description="default: the run name")
    trials: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _check(self) -> TuneSpec:
        if not self.space:
            raise ValueError("empty search space: add at least one parameter under tune.space")
        return self


class BaseRunConfig(Strict):
    """What every kind of run's config has: its kind, name and output folder, callbacks, plugins and a search.

    Subclasses say which metric a run is judged by (``monitor``, ``mode``) and its ``seed``; the tuner and the
    run layer read only these.
    """

    kind: str = "supervised"
    name: str = "run"
    output_dir: Path = Path("runs")
    callbacks: list[ComponentSpec] = []
    plugins: list[ComponentSpec] = []
    tune: TuneSpec | None = None

    @property
    def monitor(self) -> str:
        raise NotImplementedError

    @property
    def mode(self) -> Literal["min", "max"]:
        raise NotImplementedError

    @property
    def seed(self) -> int:
        raise NotImplementedError


class TrainedRunConfig(BaseRunConfig):
    """A run trained by the supervised :class:`~tujie_core.trainer.Trainer`: its ``trainer`` section decides the
    monitored metric and the seed."""

    trainer: TrainerConfig = TrainerConfig()

    @property
    def monitor(self) -> str:
        return self.trainer.monitor

    @property
    def mode(self) -> Literal["min", "max"]:
        return self.trainer.mode

    @property
    def seed(self) -> int:
        return self.trainer.seed


class TransferSpec(Strict):
    """Start a supervised run from local weights (book ch. 14.3.1): copy every tensor whose name and shape match,
    train only the head for ``freeze_epochs`` epochs, then everything, the backbone at ``backbone_lr_scale`` × lr."""

    init: Path = Field(description="a run folder, a model folder, a .safetensors file or a torch state dict")
    freeze_epochs: int = Field(0, ge=0, description="epochs with the backbone frozen (0: never)")
    backbone_lr_scale: float = Field(1.0, gt=0, le=1, description="backbone lr relative to the head's")
    head: str | None = Field(None, description="module name of the head; default: get_classifier() or the last layer")


class RunConfig(TrainedRunConfig):
    """A supervised run: data, model, task, optimisation, trainer, callbacks, plugins and an optional search."""

    kind: Literal["supervised"] = "supervised"
    data: DataSpec
    model: ComponentSpec
    task: ComponentSpec | None = None
    optimizer: ComponentSpec = ComponentSpec(name="adamw", lr=1e-3)
    scheduler: SchedulerSpec | None = None
    transfer: TransferSpec | None = None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``trainer.max_epochs=3`` → (["trainer", "max_epochs"], 3); the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}': expected KEY=VALUE, for example trainer.max_epochs=3")
    return key.strip().split("."), parse_yaml(value)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{key}' is not a section")
            node = child
        node[keys[-1]] = value
    return raw


def add_plugin(raw: dict[str, Any], name: str, options: str) -> dict[str, Any]:
    """Append plugin ``name`` to ``raw``'s ``plugins:`` with ``options`` (``"epsilon=3,max_grad_norm=1.0"``, YAML
    values; empty for its defaults), replacing an entry of the same name: what a CLI flag such as ``--dp`` does."""
    params: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in options.split(","))):
        keys, value = parse_override(part)
        if len(keys) != 1:
            raise ConfigError(f"--{name} {part}: expected KEY=VALUE, e.g. epsilon=3")
        params[keys[0]] = value
    plugins = raw.get("plugins") or []
    if not isinstance(plugins, list):
        raise ConfigError(f"plugins: expected a list, got {type(plugins).__name__}")
    raw["plugins"] = [p for p in plugins if not (isinstance(p, dict) and p.get("name") == name)]
    raw["plugins"].append({"name": name, **params})
    return raw


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {exc.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {exc}") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {type(raw).__name__}")
    return raw


def apply_params(raw: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the config dict ``raw`` with each dotted key of ``params`` set (missing sections are created)."""
    out = copy.deepcopy(dict(raw))
    for key, value in params.items():
        parts = key.split(".")
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                path = ".".join(parts[: i + 1])
                raise ConfigError(f"{key}: cannot set it, '{path}' is not a mapping (it is {child!r})")
            node = child
        node[parts[-1]] = copy.deepcopy(value)
    return out
