"""The supervised kind of run (``kind: supervised``, the default): data → model → task → train → report.

A run folder ``<output_dir>/<name>/<timestamp>/`` holds ``config.yaml`` (resolved), ``metrics.jsonl``,
``checkpoints/`` (last + best), ``model/`` (safetensors), ``summary.json`` and ``report.md`` with plots.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader

from tujie_core.callbacks import PLUGINS
from tujie_core.components import RUNTIME_ARGS, check_components
from tujie_core.compress import (
    CompressionContext,
    CompressionResult,
    DistillationTask,
    check_methods,
    compress_model,
)
from tujie_core.config import ComponentSpec, ParamSpec, RunConfig, TrainerConfig, TransferSpec, apply_params
from tujie_core.data import DATASETS, DataInfo, DataSplits, fold_splits
from tujie_core.errors import ConfigError
from tujie_core.models import MODELS, create_model
from tujie_core.optim import OPTIMIZERS, SCHEDULERS
from tujie_core.pretrained import CONFIG_NAME, WEIGHTS_NAME, save_pretrained
from tujie_core.registry import Registry, suggest, validate_kwargs
from tujie_core.runs import RUN_KINDS, RunContext, RunKind, RunOutput, load_config
from tujie_core.tasks import TASKS, Task
from tujie_core.trainer import Evaluation, Trainer
from tujie_core.transfer import FreezeBackbone, TransferReport, head_parameters, load_matching


def build_data(config: RunConfig) -> DataSplits:
    return DATASETS.create(config.data.name, where="data", **config.data.params)


def model_arguments(name: str, params: dict[str, Any], info: DataInfo) -> dict[str, Any]:
    """A model's builder arguments: the config's ``params`` plus what the data supplies (``info.model_args``) and the
    builder accepts; a config value wins."""
    accepted = inspect.signature(MODELS.get(name)).parameters
    supplied = {k: v for k, v in info.model_args.items() if k in accepted}
    return {"input_shape": info.input_shape, "num_outputs": info.num_outputs, **supplied, **params}


def build_task(config: RunConfig, info: DataInfo) -> Task:
    """Model from the registry sized by the data; task from the config or inferred from the target kind."""
    model = create_model(config.model.name, **model_arguments(config.model.name, config.model.params, info))
    for plugin_spec in config.plugins:  # the same architecture on every rebuild (DP: GroupNorm for BatchNorm)
        model = PLUGINS.create(plugin_spec.name, where="plugins", **plugin_spec.params).prepare_model(model)
    spec = config.task
    name = spec.name if spec else info.task or ("regression" if info.kind == "regression" else "classification")
    params: dict[str, Any] = dict(spec.params) if spec else {}
    accepted = inspect.signature(TASKS.get(name)).parameters
    if "mode" in accepted:  # classification-like tasks take their mode and class count from the data
        params.setdefault("mode", info.kind)
    if "num_classes" in accepted:
        params.setdefault("num_classes", len(info.class_names) or info.num_outputs)
    if "input_shape" in accepted:  # e.g. a sliding-window size from the training patch
        params.setdefault("input_shape", info.input_shape)
    runtime = {"model": model, "optimizer": config.optimizer, "scheduler": config.scheduler}
    return TASKS.create(name, where="task", runtime=runtime, **params)


def loaders(config: RunConfig, splits: DataSplits) -> dict[str, DataLoader | None]:
    data = config.data
    eval_batch = data.eval_batch_size or data.batch_size

    def make(dataset: Any, shuffle: bool) -> DataLoader | None:
        if dataset is None:
            return None
        return DataLoader(
            dataset,
            batch_size=data.batch_size if shuffle else eval_batch,
            shuffle=shuffle,
            num_workers=data.num_workers,
            collate_fn=splits.collate_fn(train=shuffle),
        )

    return {"train": make(splits.train, True), "val": make(splits.val, False), "test": make(splits.test, False)}


def cpu_trainer(config: TrainerConfig, **overrides: Any) -> Trainer:
    """A quiet Trainer with ``config``'s settings, but in this one process on the CPU in full precision: for work
    on a finished run (evaluation, fine-tuning), whatever devices, strategy and precision it was trained with."""
    single = {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto", "precision": "32-true"}
    return Trainer(config, progress="none", **single, **overrides)


# Searching these would change the process layout between trials that share one process.
_PER_PROCESS = ("trainer.devices", "trainer.num_nodes", "trainer.strategy")
_SECTION_REGISTRIES: dict[str, Registry] = {
    "data": DATASETS,
    "model": MODELS,
    "task": TASKS,
    "optimizer": OPTIMIZERS,
    "scheduler": SCHEDULERS,
}


def _component_keys(registry: Registry, spec: ComponentSpec) -> tuple[set[str], bool]:
    """Options a component accepts (its spec's own fields + its factory's parameters) and whether it takes any."""
    params = inspect.signature(registry.get(spec.name)).parameters.values()
    runtime = set(RUNTIME_ARGS.get(registry.kind, ()))
    names = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)} - runtime
    return names | set(type(spec).model_fields), any(p.kind is p.VAR_KEYWORD for p in params)


def _check_key(config: RunConfig, base: dict[str, Any], sections: list[str], key: str, space: dict[str, Any]) -> None:
    section, *rest = key.split(".")
    where = f"tune.space.{key}"
    if key in _PER_PROCESS:
        raise ConfigError(f"{where}: cannot change from trial to trial (trials share a process); set it in trainer")
    if section not in sections:
        raise ConfigError(f"{where}: unknown section '{section}'{suggest(section, sections)}")
    node = getattr(config, section)
    if rest and node is None:
        raise ConfigError(f"{where}: the config has no '{section}' section; add one (with a name) first")
    try:
        apply_params(base, {key: None})  # every part of the path but the last is a mapping
    except ConfigError as exc:
        raise ConfigError(f"tune.space.{exc}") from None
    if not rest:
        return
    option = rest[0]
    if isinstance(node, ComponentSpec):
        registry = _SECTION_REGISTRIES.get(section)
        if registry is None or f"{section}.name" in space:
            return  # the component itself is searched: each trial's validation decides
        if option in RUNTIME_ARGS.get(registry.kind, ()):
            raise ConfigError(f"{where}: set by the run itself; it cannot be searched")
        known, any_key = _component_keys(registry, node)
    else:
        known, any_key = set(type(node).model_fields), False
    if not any_key and option not in known:
        hint = suggest(option, sorted(known))
        raise ConfigError(f"{where}: unknown key '{option}' for {section} '{getattr(node, 'name', section)}'{hint}")


@RUN_KINDS.register("supervised")
class SupervisedRun(RunKind):
    """data → model → task → :class:`~tujie_core.trainer.Trainer` → the best checkpoint evaluated on val and test."""

    config_model = RunConfig

    def compress(  # type: ignore[override]
        self,
        run_dir: Path,
        config: RunConfig,
        methods: Sequence[str] | None,
        options: dict[str, dict[str, Any]],
        *,
        fine_tune_epochs: int = 2,
        student: dict[str, Any] | None = None,
    ) -> CompressionResult:
        return compress_supervised(run_dir, methods, options, fine_tune_epochs, student)

    def check(self, config: RunConfig) -> None:  # type: ignore[override]
        super().check(config)
        if config.transfer is not None and config.transfer.freeze_epochs and config.plugins:
            raise ConfigError(
                "transfer.freeze_epochs: cannot be combined with plugins (DP-SGD fixes the trained parameters when "
                "it wraps the model); train the head in a run of its own, then start the next from it"
            )
        check_components(config)

    def check_space(self, config: RunConfig, space: dict[str, ParamSpec]) -> None:  # type: ignore[override]
        """Fail fast, naming the key, when a dotted key of ``space`` cannot be an option of a supervised config."""
        if str(config.trainer.devices) != "1" or config.trainer.num_nodes != 1:
            raise ConfigError(
                "trainer.devices: each trial trains in one process; set devices: 1 and num_nodes: 1 "
                "(run trials in parallel with workers instead)"
            )
        sections = [name for name in RunConfig.model_fields if name != "tune"]
        base = config.model_dump(mode="json", exclude={"tune"})
        for key in space:
            _check_key(config, base, sections, key, space)

    def trial_overrides(self) -> dict[str, Any]:
        return {"trainer.progress": "none"}

    def folds(self, config: RunConfig, folds: int, stratified: bool) -> list[DataSplits]:  # type: ignore[override]
        return fold_splits(build_data(config), folds, stratified, config.trainer.seed)

    def train(self, config: RunConfig, context: RunContext) -> RunOutput:  # type: ignore[override]
        splits = context.data or build_data(config)
        task = build_task(config, splits.info)
        callbacks, transferred = context.callbacks(), None
        if config.transfer is not None:
            transferred, freeze = start_from(task, config.transfer)
            callbacks += [freeze] if freeze is not None else []
        trainer = Trainer(config.trainer, callbacks=callbacks, plugins=context.plugins())
        trainer.run_dir = context.open(trainer.fabric.broadcast, trainer.fabric.is_global_zero)
        split_loaders = loaders(config, splits)
        trainer.fit(task, split_loaders["train"], split_loaders["val"], ckpt_path=context.resume)
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.best_path.is_file():
            trainer.load_weights(task, checkpoint.best_path)
        evaluations: dict[str, Evaluation] = {}
        for split in ("val", "test"):
            if split_loaders[split] is not None:
                evaluations[split] = trainer.evaluate(task, split_loaders[split], split)
        metrics = {k: v for ev in evaluations.values() for k, v in ev.metrics.items()}
        info = splits.info
        if trainer.fabric.is_global_zero:
            save_pretrained(
                trainer.run_dir / "model",
                task.model,
                {"name": config.model.name, **model_arguments(config.model.name, config.model.params, info)},
                kind=info.kind,
                class_names=info.class_names,
                **({"decision_threshold": task.decision_threshold} if info.kind == "binary" else {}),
                feature_names=info.feature_names,
                **info.metadata,
                **({"plugins": [{"name": p.name, **p.params} for p in config.plugins]} if config.plugins else {}),
            )
        header = (
            f"Data: `{config.data.name}` ({info.source}), {info.kind}, input shape {info.input_shape}. "
            f"Model: `{config.model.name}`. Epochs run: {trainer.state.epoch}, optimizer steps: "
            f"{trainer.state.step}. Evaluated with the best checkpoint by `{config.trainer.monitor}`."
        )
        if transferred is not None:
            header += f" Transfer: {transferred.describe()}{_freeze_note(config)}."
        return RunOutput(
            metrics,
            title=f"Run report: {config.name}",
            header=header,
            evaluations=evaluations,
            history=trainer.state.history,
            class_names=info.class_names,
            sections=trainer.report_sections(),
            summary={
                "epochs": trainer.state.epoch,
                "steps": trainer.state.step,
                **({"transfer": transferred.summary()} if transferred is not None else {}),
            },
            model=task,
            is_global_zero=trainer.fabric.is_global_zero,
        )


def start_from(task: Task, spec: TransferSpec) -> tuple[TransferReport, FreezeBackbone | None]:
    """Load ``spec.init``'s matching weights into the task's model, scale the backbone's learning rate and freeze
    it for the first ``spec.freeze_epochs`` epochs (the callback to add)."""
    report = load_matching(task.model, spec.init)
    head = head_parameters(task.model, spec.head)
    backbone = [(n, p) for n, p in task.model.named_parameters() if n not in head]
    task.lr_scales.update({n: spec.backbone_lr_scale for n, _ in backbone})
    return report, FreezeBackbone([p for _, p in backbone], spec.freeze_epochs) if spec.freeze_epochs else None


def _freeze_note(config: RunConfig) -> str:
    spec = config.transfer
    assert spec is not None
    frozen = f"; backbone frozen for {spec.freeze_epochs} epoch(s)" if spec.freeze_epochs else ""
    return frozen + (f", then at {spec.backbone_lr_scale}× lr" if spec.backbone_lr_scale != 1 else "")


@dataclass
class LoadedRun:
    """A finished run folder brought back: its config, its data splits and its task with the trained weights."""

    run_dir: Path
    config: RunConfig
    splits: DataSplits
    task: Task
    model_config: dict[str, Any]


def load_run(run_dir: str | Path) -> LoadedRun:
    """Rebuild a run written by :func:`train_from_config` from ``config.yaml`` and ``model/`` (safetensors)."""
    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    for path in (run_dir / "config.yaml", model_dir / CONFIG_NAME, model_dir / WEIGHTS_NAME):
        if not path.is_file():
            raise ConfigError(f"{run_dir}: not a finished run folder (missing {path.relative_to(run_dir)})")
    config = load_config(run_dir / "config.yaml")
    if not isinstance(config, RunConfig):
        raise ConfigError(f"{run_dir}: a run of kind '{config.kind}'; this works on supervised runs only")
    splits = build_data(config)
    task = build_task(config, splits.info)
    model_config = json.loads((model_dir / CONFIG_NAME).read_text(encoding="utf-8"))
    task.model.load_state_dict(load_file(str(model_dir / WEIGHTS_NAME)))
    task.model.eval()
    if "decision_threshold" in model_config:
        task.decision_threshold = float(model_config["decision_threshold"])
    return LoadedRun(run_dir, config, splits, task, model_config)


# ---- compression -----------------------------------------------------------------------------------------------
DEFAULT_METHODS = ("prune", "lowrank", "int8", "distil")


def shrunk_widths(params: dict[str, Any], factor: int = 2, minimum: int = 8) -> dict[str, Any]:
    """Default distillation student: the teacher's registry options with ``hidden``/``channels`` widths ÷ ``factor``."""
    return {
        k: [max(minimum, w // factor) for w in v] if k in ("hidden", "channels") and isinstance(v, list) else v
        for k, v in params.items()
    }


def _distil_options(teacher: Any, temperature: float = 4.0, alpha: float = 0.7) -> None:
    """The options of a supervised run's ``distil`` (checked before any work)."""


def _check_request(
    run: LoadedRun, methods: Sequence[str] | None, options: dict[str, dict[str, Any]], fine_tune_epochs: int
) -> tuple[list[str], list[str]]:
    """The methods to run and notes on defaults left out; ConfigError for a name, an option or a combination
    that would fail later."""
    regression = run.splits.info.kind == "regression"
    notes = []
    if methods is None:
        names = [m for m in DEFAULT_METHODS if not (regression and m == "distil")]
        if regression:
            notes.append("distil left out: distillation needs a classification run.")
    else:
        names = list(methods)
    if regression and "distil" in names:
        raise ConfigError("compress.distil: distillation needs a classification run; this one is regression")
    if fine_tune_epochs < 0:
        raise ConfigError(f"fine_tune_epochs must be ≥ 0, got {fine_tune_epochs}")
    if fine_tune_epochs == 0 and "qat" in names:
        raise ConfigError("compress.qat: quantisation-aware training needs fine_tune_epochs ≥ 1, got 0")
    check_methods(names, options, provided=("distil", "fine_tune", "calibration"), distil=_distil_options)
    return names, notes


def compress_supervised(
    run_dir: Path,
    methods: Sequence[str] | None,
    options: dict[str, dict[str, Any]],
    fine_tune_epochs: int = 2,
    student: dict[str, Any] | None = None,
) -> CompressionResult:
    """A supervised run's compression: default :data:`DEFAULT_METHODS`, without ``distil`` for a regression run
    (said in the notes). Metric: accuracy (classification) or R² (regression) on the test split (else
    validation), on the CPU. Fine-tuning (after pruning and low-rank; QAT's training) runs ``fine_tune_epochs``
    epochs (0: none, which QAT cannot do) with the run's optimizer at a tenth of its learning rate; the distilled
    student (``student``: registry options of the run's model, over the default :func:`shrunk_widths`; ``distil``
    options ``temperature``, ``alpha``) trains as long as the run did."""
    run = load_run(run_dir)
    config, info = run.config, run.splits.info
    methods, notes = _check_request(run, methods, options, fine_tune_epochs)
    student_params = {**shrunk_widths(config.model.params), **(student or {})}
    if "distil" in methods:
        where, runtime = "compress.student", ("input_shape", "num_outputs")
        validate_kwargs(MODELS.get(config.model.name), student_params, where=where, skip=runtime)
    elif student:
        raise ConfigError("compress.student: options for the distillation student, but distil is not run")
    split_loaders = loaders(config, run.splits)
    eval_split = "test" if split_loaders["test"] is not None else "val"
    eval_loader, train_loader = split_loaders[eval_split], split_loaders["train"]
    if eval_loader is None or train_loader is None:
        raise ConfigError(f"{run.run_dir}: compression needs a train split and a test or validation split")
    metric_name = "r2" if info.kind == "regression" else "accuracy"
    evaluator = cpu_trainer(config.trainer)

    def task_for(model: nn.Module, **changes: Any) -> Any:
        task = copy.copy(run.task)
        task.model = model
        for key, value in changes.items():
            setattr(task, key, value)
        return task

    def evaluate(model: nn.Module) -> float:
        metrics = evaluator.evaluate(task_for(model), eval_loader, eval_split, curves=False).metrics
        return metrics[f"{eval_split}/{metric_name}"]

    def fit(task: Any, epochs: int) -> None:
        cpu_trainer(config.trainer, max_epochs=epochs, max_steps=None).fit(task, train_loader, split_loaders["val"])

    def fine_tune(model: nn.Module) -> nn.Module:
        spec = run.task.optimizer_spec
        lr = spec.params.get("lr", 1e-3) * 0.1
        fit(task_for(model, optimizer_spec=spec.model_copy(update={"lr": lr}), scheduler_spec=None), fine_tune_epochs)
        return model

    def distil(teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.7) -> nn.Module:
        model = create_model(config.model.name, **model_arguments(config.model.name, student_params, info))
        task = DistillationTask(
            model,
            teacher,
            run.task.num_classes,
            temperature=temperature,
            alpha=alpha,
            mode=run.task.kind,
            optimizer=config.optimizer,
            scheduler=config.scheduler,
        )
        fit(task, config.trainer.max_epochs)
        return model.eval()

    sample = next(iter(DataLoader(eval_loader.dataset, batch_size=1, collate_fn=eval_loader.collate_fn)))
    context = CompressionContext(
        example=run.task.unpack(sample)[0].float(),
        calibration=[run.task.unpack(b)[0] for b in itertools.islice(iter(train_loader), 8)],
        fine_tune=fine_tune if fine_tune_epochs else None,
        distil=distil,
        workdir=run.run_dir / "compression",
    )
    result = compress_model(
        run.task.model,
        evaluate,
        context,
        run.run_dir / "compression",
        methods=methods,
        options=options,
        title=config.name,
        metric_name=metric_name,
        note=" ".join([f"{metric_name} on the {eval_split} split;", *notes]),
        report=run.run_dir / "report.md",
    )
    result.notes = notes
    return result
