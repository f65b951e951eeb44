"""Run a whole experiment from a :class:`~tujie_core.config.RunConfig`: data → model → task → train → report.

A run folder ``<output_dir>/<name>/<timestamp>/`` holds ``config.yaml`` (resolved), ``metrics.jsonl``,
``checkpoints/`` (last + best), ``model/`` (safetensors), ``summary.json`` and ``report.md`` with plots.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lightning.fabric import seed_everything
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from tujie_core.callbacks import CALLBACKS, PLUGINS, Callback
from tujie_core.config import RunConfig, TrainerConfig, dump_config, load_config
from tujie_core.data import DATASETS, DataInfo, DataSplits
from tujie_core.errors import ConfigError
from tujie_core.models import create_model
from tujie_core.pretrained import CONFIG_NAME, WEIGHTS_NAME, save_pretrained
from tujie_core.report import write_report
from tujie_core.tasks import TASKS, Task
from tujie_core.trainer import Evaluation, Trainer


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, float]
    report: Path
    is_global_zero: bool = True  # False on the other processes of a multi-process run


def build_data(config: RunConfig) -> DataSplits:
    return DATASETS.create(config.data.name, where="data", **config.data.params)


def build_task(config: RunConfig, info: DataInfo) -> Task:
    """Model from the registry sized by the data; task from the config or inferred from the target kind."""
    model_params = config.model.params
    model = create_model(config.model.name, input_shape=info.input_shape, num_outputs=info.num_outputs, **model_params)
    spec = config.task
    name = spec.name if spec else ("regression" if info.kind == "regression" else "classification")
    params: dict[str, Any] = dict(spec.params) if spec else {}
    if name == "classification":
        params.setdefault("mode", info.kind)
        params.setdefault("num_classes", len(info.class_names) or info.num_outputs)
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
        )

    return {"train": make(splits.train, True), "val": make(splits.val, False), "test": make(splits.test, False)}


def cpu_trainer(config: TrainerConfig, **overrides: Any) -> Trainer:
    """A quiet Trainer with ``config``'s settings, but in this one process on the CPU in full precision: for work
    on a finished run (evaluation, fine-tuning), whatever devices, strategy and precision it was trained with."""
    single = {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto", "precision": "32-true"}
    return Trainer(config, progress="none", **single, **overrides)


def new_run_dir(config: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return config.output_dir / config.name / stamp


def train_from_config(
    config: RunConfig,
    resume: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    run_dir: Path | None = None,
    splits: DataSplits | None = None,
) -> RunResult:
    """Train, evaluate the best checkpoint on the validation and test splits and write the report.

    ``resume``: a run folder (its ``checkpoints/last.ckpt``) or a checkpoint file; the run continues in place.
    ``callbacks`` are added to those of the config (a tuner adds its pruning callback); ``run_dir`` replaces the
    timestamped folder; ``splits`` replaces the config's data (cross-validation folds).
    """
    seed_everything(config.trainer.seed, workers=True, verbose=False)
    splits = splits or build_data(config)
    task = build_task(config, splits.info)
    trainer = Trainer(
        config.trainer,
        callbacks=[*(CALLBACKS.create(s.name, where="callbacks", **s.params) for s in config.callbacks), *callbacks],
        plugins=[PLUGINS.create(s.name, where="plugins", **s.params) for s in config.plugins],
    )
    ckpt = None
    if resume is not None:
        resume = Path(resume)
        ckpt = resume if resume.is_file() else resume / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise ConfigError(f"{resume}: nothing to resume (no checkpoints/last.ckpt)")
        run_dir = ckpt.parent.parent
    elif run_dir is None:
        run_dir = trainer.fabric.broadcast(new_run_dir(config))  # every process writes to rank 0's folder
    trainer.run_dir = run_dir
    if trainer.fabric.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")

    split_loaders = loaders(config, splits)
    trainer.fit(task, split_loaders["train"], split_loaders["val"], ckpt_path=ckpt)
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_path.is_file():
        trainer.load_weights(task, checkpoint.best_path)
    evaluations: dict[str, Evaluation] = {}
    for split in ("val", "test"):
        if split_loaders[split] is not None:
            evaluations[split] = trainer.evaluate(task, split_loaders[split], split)
    metrics = {k: v for ev in evaluations.values() for k, v in ev.metrics.items()}
    report = run_dir / "report.md"
    if trainer.fabric.is_global_zero:
        info = splits.info
        save_pretrained(
            run_dir / "model",
            task.model,
            {
                "name": config.model.name,
                "input_shape": list(info.input_shape),
                "num_outputs": info.num_outputs,
                **config.model.params,
            },
            kind=info.kind,
            class_names=info.class_names,
            **({"decision_threshold": task.decision_threshold} if info.kind == "binary" else {}),
            feature_names=info.feature_names,
        )
        (run_dir / "summary.json").write_text(
            json.dumps({"metrics": metrics, "epochs": trainer.state.epoch, "steps": trainer.state.step}, indent=2)
        )
        header = (
            f"Data: `{config.data.name}` ({info.source}), {info.kind}, input shape {info.input_shape}. "
            f"Model: `{config.model.name}`. Epochs run: {trainer.state.epoch}, optimizer steps: "
            f"{trainer.state.step}. Evaluated with the best checkpoint by `{config.trainer.monitor}`."
        )
        sections = trainer.report_sections()
        report = write_report(
            run_dir,
            title=f"Run report: {config.name}",
            evaluations=evaluations,
            history=trainer.state.history,
            class_names=info.class_names,
            sections=sections,
            header=header,
        )
    return RunResult(run_dir, metrics, report, trainer.fabric.is_global_zero)


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
    splits = build_data(config)
    task = build_task(config, splits.info)
    model_config = json.loads((model_dir / CONFIG_NAME).read_text(encoding="utf-8"))
    task.model.load_state_dict(load_file(str(model_dir / WEIGHTS_NAME)))
    task.model.eval()
    if "decision_threshold" in model_config:
        task.decision_threshold = float(model_config["decision_threshold"])
    return LoadedRun(run_dir, config, splits, task, model_config)
