"""A trained run folder → every compressed variant of its model, measured, in a comparison table."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from tujie_core.compress._util import _inputs
from tujie_core.compress.distil import DistillationTask
from tujie_core.compress.measurement import CompressionRow, compression_table, measure, rows_to_json
from tujie_core.compress.registry import COMPRESSORS, CompressionContext, compress
from tujie_core.errors import ConfigError
from tujie_core.models import MODELS, create_model
from tujie_core.registry import validate_kwargs
from tujie_core.report import replace_section
from tujie_core.run import LoadedRun, cpu_trainer, load_run, loaders

DEFAULT_METHODS = ("prune", "lowrank", "int8", "distil")
REPORT_SECTION = "## Compression"


@dataclass
class CompressionResult:
    """Every variant of a run's model, its table row, notes on the methods, and where the table was written."""

    rows: list[CompressionRow]
    models: dict[str, nn.Module]
    table: str
    output_dir: Path
    notes: list[str] = field(default_factory=list)


def shrunk_widths(params: dict[str, Any], factor: int = 2, minimum: int = 8) -> dict[str, Any]:
    """Default distillation student: the teacher's registry options with ``hidden``/``channels`` widths ÷ ``factor``."""
    return {
        k: [max(minimum, w // factor) for w in v] if k in ("hidden", "channels") and isinstance(v, list) else v
        for k, v in params.items()
    }


def _check_request(
    run: LoadedRun, methods: Iterable[str] | None, options: dict[str, dict[str, Any]], fine_tune_epochs: int
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
    if not names:
        raise ConfigError("compress: name at least one method")
    for name in names:
        COMPRESSORS.get(name)  # unknown names fail with the registry's suggestion
    if regression and "distil" in names:
        raise ConfigError("compress.distil: distillation needs a classification run; this one is regression")
    if fine_tune_epochs < 0:
        raise ConfigError(f"fine_tune_epochs must be ≥ 0, got {fine_tune_epochs}")
    if fine_tune_epochs == 0 and "qat" in names:
        raise ConfigError("compress.qat: quantisation-aware training needs fine_tune_epochs ≥ 1, got 0")
    for name, kwargs in options.items():
        if name not in names:
            raise ConfigError(f"compress.{name}: options for a method that is not run ({', '.join(names)})")
        validate_kwargs(COMPRESSORS.get(name), kwargs, where=f"compress.{name}", skip=("model", "context"))
    return names, notes


def compress_run(
    run_dir: str | Path,
    methods: Iterable[str] | None = None,
    *,
    options: dict[str, dict[str, Any]] | None = None,
    fine_tune_epochs: int = 2,
    student: dict[str, Any] | None = None,
    temperature: float = 4.0,
    alpha: float = 0.7,
) -> CompressionResult:
    """Compress a run written by :func:`tujie_core.train_from_config` (a supervised run) with each of ``methods``.

    ``methods``: default :data:`DEFAULT_METHODS`, without ``distil`` for a regression run (said in the notes);
    ``options``: method → its keyword arguments. Names and options are checked before any work.
    Metric: accuracy (classification) or R² (regression) on the run's test split (else validation), on the CPU.
    Fine-tuning (after pruning and low-rank; QAT's training) runs ``fine_tune_epochs`` epochs (0: none, which
    QAT cannot do) with the run's optimizer at a tenth of its learning rate; the distilled student (``student``:
    registry options of the run's model, over the default :func:`shrunk_widths`) trains as long as the run did.
    The table goes to ``<run>/compression/compression.{md,json}`` and replaces the run report's compression
    section.
    """
    run = load_run(run_dir)
    config, info = run.config, run.splits.info
    methods, notes = _check_request(run, methods, options or {}, fine_tune_epochs)
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

    def distil(teacher: nn.Module) -> nn.Module:
        model = create_model(
            config.model.name, input_shape=info.input_shape, num_outputs=info.num_outputs, **student_params
        )
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

    output_dir = run.run_dir / "compression"
    output_dir.mkdir(exist_ok=True)
    sample = next(iter(DataLoader(eval_loader.dataset, batch_size=1)))
    context = CompressionContext(
        example=_inputs(sample).float(),
        calibration=[_inputs(b) for b in itertools.islice(iter(train_loader), 8)],
        fine_tune=fine_tune if fine_tune_epochs else None,
        distil=distil,
        workdir=output_dir,
    )
    baseline = run.task.model.cpu().eval()
    models: dict[str, nn.Module] = {"fp32": baseline}
    rows = [measure(baseline, evaluate, context.example, name="fp32", details="trained model", metric_name=metric_name)]
    for name in methods:
        model, details = compress(name, baseline, context, **(options or {}).get(name, {}))
        models[name] = model
        rows.append(measure(model, evaluate, context.example, name=name, details=details, metric_name=metric_name))
    table = compression_table(rows)
    note = " ".join(
        [
            f"{metric_name} on the {eval_split} split; latency on the CPU with {torch.get_num_threads()} threads "
            "(median of 50 forward passes); size = serialized weights. Ratios against fp32.",
            *notes,
        ]
    )
    (output_dir / "compression.md").write_text(f"# Compression: {config.name}\n\n{note}\n\n{table}\n", "utf-8")
    (output_dir / "compression.json").write_text(rows_to_json(rows), encoding="utf-8")
    report = run.run_dir / "report.md"
    if report.is_file():
        replace_section(report, REPORT_SECTION, f"{note}\n\n{table}\n")
    return CompressionResult(rows, models, table, output_dir, notes)
