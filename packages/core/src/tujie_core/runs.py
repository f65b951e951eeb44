"""The run layer: every kind of run (supervised training, text fine-tuning, an RL algorithm with its own loop, a
detector's own trainer) plugs in here and gets ``tujie train CONFIG``, run folders, resume, ``tujie tune`` and a
report through the same code.

A kind of run is a :class:`RunKind` registered under a name in :data:`RUN_KINDS` (entry-point group
``tujie.runs``); a run config selects it with its top-level ``kind:`` key (default ``supervised``). The kind says
which config model it reads, builds what it needs and trains; this module resolves the run folder and the resume
checkpoint, writes ``config.yaml``, ``summary.json`` and ``report.md``, and hands tuners and other callers one
:func:`train_from_config`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import yaml
from lightning.fabric import seed_everything
from pydantic import ValidationError

from tujie_core.callbacks import CALLBACKS, PLUGINS, Callback, Plugin
from tujie_core.config import BaseRunConfig, ParamSpec, add_plugin, apply_overrides, apply_params, read_yaml
from tujie_core.errors import ConfigError
from tujie_core.registry import Registry, format_validation_error
from tujie_core.report import write_report
from tujie_core.trainer import Evaluation

if TYPE_CHECKING:
    from tujie_core.compress import CompressionResult

RUN_KINDS: Registry = Registry("runs")


@dataclass
class RunContext:
    """What the run layer hands a kind: the run folder, the checkpoint to resume from, extra callbacks (a tuner's
    pruning callback) and data that replaces the config's (a cross-validation fold)."""

    config: BaseRunConfig
    run_dir: Path
    resume: Path | None = None
    extra_callbacks: list[Callback] = field(default_factory=list)
    data: Any = None

    def callbacks(self) -> list[Callback]:
        """The config's ``callbacks:`` entries followed by the extra ones."""
        built = [CALLBACKS.create(s.name, where="callbacks", **s.params) for s in self.config.callbacks]
        return [*built, *self.extra_callbacks]

    def plugins(self) -> list[Plugin]:
        return [PLUGINS.create(s.name, where="plugins", **s.params) for s in self.config.plugins]

    def open(self, broadcast: Callable[[Path], Path] | None = None, is_global_zero: bool = True) -> Path:
        """Settle the run folder (``broadcast``: every process takes rank 0's) and write ``config.yaml``."""
        if broadcast is not None:
            self.run_dir = broadcast(self.run_dir)
        if is_global_zero:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_config(self.config), encoding="utf-8")
        return self.run_dir


@dataclass
class RunOutput:
    """What a kind's ``train`` returns: metrics of the finished model and what its report shows."""

    metrics: dict[str, float]
    title: str
    header: str = ""
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    class_names: Sequence[str] = ()
    sections: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)  # extra summary.json entries (epochs, steps, ...)
    model: Any = None  # the trained object, for callers in Python (a classifier, an agent)
    warnings: list[str] = field(default_factory=list)  # for the user: skipped rows, refused options
    details: dict[str, Any] = field(default_factory=dict)  # kind-specific results for Python callers
    is_global_zero: bool = True


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, float]
    report: Path
    is_global_zero: bool = True  # False on the other processes of a multi-process run
    model: Any = None
    warnings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class RunKind:
    """A kind of run. Subclass it, set ``config_model`` and implement :meth:`train`; register the class in
    :data:`RUN_KINDS` (or the ``tujie.runs`` entry-point group) under the name a config's ``kind:`` uses.

    Optional: :meth:`parse` (defaults, merging), :meth:`check` (component options), :meth:`check_space` (what a
    search may change), :meth:`folds` (cross-validation).
    """

    config_model: ClassVar[type[BaseRunConfig]]
    takes_plugins: ClassVar[bool] = True  # False for loops that cannot be wrapped (an RL algorithm's own learn)

    def parse(self, raw: dict[str, Any]) -> BaseRunConfig:
        """Validate a raw config mapping into ``config_model`` (errors name the field)."""
        try:
            config = self.config_model.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "", self.config_model)) from None
        self.check(config)
        return config

    def check(self, config: BaseRunConfig) -> None:
        """Raise ConfigError naming the field when a component or option cannot work."""
        if config.plugins and not self.takes_plugins:
            raise ConfigError(f"plugins: runs of kind '{config.kind}' train in a loop of their own and take no plugins")

    def check_space(self, config: BaseRunConfig, space: dict[str, Any]) -> None:
        """Fail fast when a searched key cannot be set: each one is set to a sample value and the config re-parsed."""
        base = config.model_dump(mode="json", exclude={"tune"})
        for key, value in sample_values(space).items():
            try:
                self.parse(apply_params(base, {key: value}))
            except ConfigError as exc:
                raise ConfigError(f"tune.space.{key}: {exc}") from None

    def trial_overrides(self) -> dict[str, Any]:
        """Dotted keys set in every tuning trial (quiet progress output)."""
        return {}

    def folds(self, config: BaseRunConfig, folds: int, stratified: bool) -> list[Any]:
        raise ConfigError(f"cross-validation is not available for runs of kind '{config.kind}'")

    def train(self, config: BaseRunConfig, context: RunContext) -> RunOutput:
        raise NotImplementedError

    def compress(
        self,
        run_dir: Path,
        config: BaseRunConfig,
        methods: Sequence[str] | None,
        options: dict[str, dict[str, Any]],
        *,
        fine_tune_epochs: int = 2,
        student: dict[str, Any] | None = None,
    ) -> CompressionResult:
        """Compress the trained model of a finished run folder with ``tujie_core.compress.compress_model``.

        ``student``: options of the distillation student (its size); ``fine_tune_epochs``: training after
        pruning and low-rank, and for QAT, where the kind can train.
        """
        raise ConfigError(f"compression is not available for runs of kind '{config.kind}'")


def compress_run(
    run_dir: str | Path,
    methods: Sequence[str] | None = None,
    *,
    options: dict[str, dict[str, Any]] | None = None,
    fine_tune_epochs: int = 2,
    student: dict[str, Any] | None = None,
) -> CompressionResult:
    """Compress a finished run folder of any kind with each of ``methods`` (default: the kind's own choice);
    ``options``: method → its keyword arguments, checked before any work. The table goes to
    ``<run>/compression/compression.{md,json}`` and replaces the compression section of the run's report."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a finished run folder (missing config.yaml)")
    config = load_config(run_dir / "config.yaml")
    return kind_of(config).compress(
        run_dir, config, methods, options or {}, fine_tune_epochs=fine_tune_epochs, student=student
    )


def kind_of(config: BaseRunConfig | dict[str, Any]) -> RunKind:
    name = config.get("kind", "supervised") if isinstance(config, dict) else config.kind
    if not isinstance(name, str):
        raise ConfigError(f"kind: expected the name of a kind of run, got {name!r}")
    try:
        return RUN_KINDS.get(name)()
    except ConfigError as exc:
        raise ConfigError(f"kind: {exc}") from None


def parse_config(raw: dict[str, Any]) -> BaseRunConfig:
    """A raw mapping → the config of the kind it names (``kind:``, default ``supervised``), validated."""
    return kind_of(raw).parse(raw)


def load_config(
    path: str | Path, overrides: list[str] | None = None, plugins: dict[str, str] | None = None
) -> BaseRunConfig:
    """Read a YAML run config of any kind, apply ``KEY=VALUE`` overrides, add ``plugins`` (name → options, as
    ``--dp epsilon=3`` gives them), validate every section and component."""
    path = Path(path)
    raw = apply_overrides(read_yaml(path), overrides or [])
    for name, options in (plugins or {}).items():
        add_plugin(raw, name, options)
    try:
        return parse_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def dump_config(config: BaseRunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def new_run_dir(config: BaseRunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return config.output_dir / config.name / stamp


def resume_checkpoint(resume: str | Path) -> Path:
    """A run folder (its ``checkpoints/last.ckpt``) or a checkpoint file."""
    resume = Path(resume)
    ckpt = resume if resume.is_file() else resume / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise ConfigError(f"{resume}: nothing to resume (no checkpoints/last.ckpt)")
    return ckpt


def train_from_config(
    config: BaseRunConfig,
    resume: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    run_dir: Path | None = None,
    data: Any = None,
) -> RunResult:
    """Train a run of any kind, then write ``summary.json`` and ``report.md`` into its folder.

    ``resume``: a run folder or a checkpoint; the run continues in place. ``callbacks`` are added to the config's
    (a tuner adds its pruning callback); ``run_dir`` replaces the timestamped folder; ``data`` replaces the config's
    data (a cross-validation fold, for kinds that support folds).
    """
    kind = kind_of(config)
    kind.check(config)
    seed_everything(config.seed, workers=True, verbose=False)
    ckpt = resume_checkpoint(resume) if resume is not None else None
    if ckpt is not None:
        run_dir = ckpt.parent.parent
    context = RunContext(config, run_dir or new_run_dir(config), ckpt, list(callbacks), data)
    out = kind.train(config, context)
    run_dir = context.run_dir
    report = run_dir / "report.md"
    if out.is_global_zero:
        summary = {"kind": config.kind, "metrics": out.metrics, **out.summary}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        report = write_report(
            run_dir,
            title=out.title,
            evaluations=out.evaluations or _by_split(out.metrics),
            history=out.history,
            class_names=out.class_names,
            sections=out.sections,
            header=out.header,
        )
    return RunResult(run_dir, out.metrics, report, out.is_global_zero, out.model, out.warnings, out.details)


def _by_split(metrics: dict[str, float]) -> dict[str, Evaluation]:
    """``{"val/return": 3.0}`` → one curve-less evaluation per split prefix, for the report's metric table."""
    splits: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        splits.setdefault(key.split("/", 1)[0] if "/" in key else "result", {})[key] = value
    return {split: Evaluation(values, {}, "custom") for split, values in splits.items()}


def sample_values(space: dict[str, ParamSpec]) -> dict[str, Any]:
    """One valid value per parameter (its low end or first choice), to check that each key can be set."""
    values: dict[str, Any] = {}
    for key, spec in space.items():
        if spec.type == "categorical":
            values[key] = spec.choices[0]  # type: ignore[index]
        else:
            values[key] = int(spec.low) if spec.type == "int" else spec.low  # type: ignore[arg-type]
    return values
