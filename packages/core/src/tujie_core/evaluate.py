"""Model selection (book ch. 12): k-fold cross-validation, decision thresholds, ensembles.

- :func:`cross_validate` trains a run config once per fold and reports mean ± std of every validation metric.
- :func:`choose_threshold` picks the binary decision threshold that reaches a target recall (or precision, or the
  best F1) on validation data; :func:`tune_run_threshold` stores it with a trained run's model.
- :class:`Ensemble` averages probabilities or takes a majority vote over trained models; it returns log-scores, so
  a :class:`~tujie_core.tasks.ClassificationTask` evaluates it like any single model.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from tujie_core.config import BaseRunConfig
from tujie_core.data import dataset_targets
from tujie_core.errors import ConfigError, DataError
from tujie_core.pretrained import CONFIG_NAME
from tujie_core.run import cpu_trainer, load_run, loaders
from tujie_core.runs import kind_of, train_from_config
from tujie_core.tasks import ClassificationTask, Task

# ---- cross-validation ------------------------------------------------------------------------------------------


@dataclass
class CrossValidation:
    """Per-fold validation metrics and their mean and standard deviation (ddof=1)."""

    folds: list[dict[str, float]]
    mean: dict[str, float]
    std: dict[str, float]
    run_dirs: list[Path] = field(default_factory=list)

    def table(self) -> str:
        lines = ["| metric | mean | std | " + " | ".join(f"fold {i + 1}" for i in range(len(self.folds))) + " |"]
        lines.append("|" + "---|" * (3 + len(self.folds)))
        for key in self.mean:
            per_fold = " | ".join(f"{fold[key]:.4f}" for fold in self.folds)
            lines.append(f"| {key} | {self.mean[key]:.4f} | {self.std[key]:.4f} | {per_fold} |")
        return "\n".join(lines)


def cross_validate(
    config: BaseRunConfig,
    folds: int = 5,
    *,
    stratified: bool = True,
    output_dir: str | Path | None = None,
) -> CrossValidation:
    """Train ``config`` on ``folds`` folds of its train + validation data; the test split stays untouched.

    Each fold is a full run (best checkpoint by the monitored metric on the held-out fold) in
    ``<output_dir>/fold-<k>``, emptied first (no checkpoint of an earlier run leaks in). The kind of run makes the
    folds (supervised: stratified for classification when ``stratified``; features keep the scaling fitted on the
    config's own train split, a small leak for standardised tables, none for images).
    """
    if folds < 2:
        raise ConfigError(f"folds: need at least 2, got {folds}")
    parts = kind_of(config).folds(config, folds, stratified)
    out = Path(output_dir) if output_dir is not None else config.output_dir / config.name / "cv"
    results, run_dirs = [], []
    for k, data in enumerate(parts):
        run_dir = out / f"fold-{k + 1}"
        shutil.rmtree(run_dir, ignore_errors=True)
        result = train_from_config(config, run_dir=run_dir, data=data)
        results.append({key: v for key, v in result.metrics.items() if key.startswith("val/")})
        run_dirs.append(run_dir)
    keys = [key for key in results[0] if all(key in r for r in results)]
    values = {key: np.array([r[key] for r in results]) for key in keys}
    cv = CrossValidation(
        results,
        {key: float(v.mean()) for key, v in values.items()},
        {key: float(v.std(ddof=1)) for key, v in values.items()},
        run_dirs,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "cv.json").write_text(json.dumps({"folds": cv.folds, "mean": cv.mean, "std": cv.std}, indent=2))
    (out / "cv.md").write_text(f"# {folds}-fold cross-validation: {config.name}\n\n{cv.table()}\n", encoding="utf-8")
    return cv


# ---- decision threshold ----------------------------------------------------------------------------------------

Objective = Literal["recall", "precision", "f1"]


@dataclass
class ThresholdChoice:
    """The chosen binary decision threshold and the validation precision/recall/F1 it gives."""

    threshold: float
    precision: float
    recall: float
    f1: float
    objective: str
    target: float | None


def choose_threshold(
    probs: Tensor | np.ndarray, targets: Tensor | np.ndarray, objective: Objective = "f1", target: float | None = None
) -> ThresholdChoice:
    """Decision threshold for binary probabilities (ch. 12.4.2), exact on the given validation set.

    A sample is positive when ``prob > threshold`` (the rule of the task's metrics), with probabilities in
    float32 as the model outputs them. Each distinct probability is an operating point (it and every higher one
    positive):

    - ``objective="recall", target=0.95``: the best precision among the points with recall ≥ 0.95 (what medical
      screening wants);
    - ``objective="precision", target=0.9``: the best recall among the points with precision ≥ 0.9;
    - ``objective="f1"``: the best F1.

    Ties go to the higher threshold. The threshold returned is the next lower distinct probability of the data
    (half the lowest one when every sample is called positive), always inside (0, 1), so that ``prob >
    threshold`` reproduces the chosen point exactly; its precision, recall and F1 are computed at that value.
    """
    p = np.asarray(probs, dtype=np.float32).reshape(-1)
    y = np.asarray(targets).reshape(-1).astype(bool)
    if p.shape != y.shape or p.size == 0:
        raise DataError(f"choose_threshold: need as many probabilities as targets, got {p.size} and {y.size}")
    if not y.any():
        raise DataError("choose_threshold: the validation data has no positive sample")
    if objective == "f1" and target is not None:
        raise ConfigError("choose_threshold: objective 'f1' takes no target")
    if objective in ("recall", "precision") and (target is None or not 0 < target <= 1):
        raise ConfigError(f"choose_threshold: objective '{objective}' needs a target in (0, 1], got {target}")
    order = np.argsort(-p, kind="stable")
    p_sorted = p[order]
    last = np.r_[np.nonzero(np.diff(p_sorted))[0], p.size - 1]  # last index of each distinct probability
    levels = p_sorted[last]  # descending
    below = np.r_[levels[1:], np.float32(0)]
    thresholds = np.where(below > 0, below, levels / np.float32(2))  # a level of 0 cannot be called positive
    positives = int(y.sum())
    scores = _scores(np.cumsum(y[order])[last], last + 1, positives)
    valid = thresholds > 0
    ok = valid & (scores[objective] >= (target or 0) - 1e-12)
    if not ok.any():
        best = scores[objective][valid].max(initial=0.0)
        raise DataError(f"choose_threshold: no threshold reaches {objective} {target} (best on this data: {best:.4f})")
    ranked = scores[{"recall": "precision", "precision": "recall", "f1": "f1"}[objective]]
    threshold = thresholds[int(np.argmax(np.where(ok, ranked, -np.inf)))]  # first maximum: the highest threshold
    positive = p > threshold
    at = _scores(np.sum(positive & y, keepdims=True), np.sum(positive, keepdims=True), positives)
    return ThresholdChoice(
        float(threshold), float(at["precision"][0]), float(at["recall"][0]), float(at["f1"][0]), objective, target
    )


def _scores(tp: np.ndarray, predicted: np.ndarray, positives: int) -> dict[str, np.ndarray]:
    """Precision, recall and F1 from true-positive and (non-zero) predicted-positive counts."""
    tp = tp.astype(np.float64)
    return {"precision": tp / predicted, "recall": tp / positives, "f1": 2 * tp / (predicted + positives)}


def tune_run_threshold(
    run_dir: str | Path, objective: Objective = "f1", target: float | None = None
) -> tuple[ThresholdChoice, dict[str, float]]:
    """Choose a trained binary run's threshold on its validation split and store it in ``model/config.json``.

    Returns the choice and the validation (and test) metrics at the new threshold.
    """
    run = load_run(run_dir)
    task = run.task
    if not isinstance(task, ClassificationTask) or task.kind != "binary":
        raise ConfigError(f"{run_dir}: decision thresholds apply to binary classification runs only")
    split_loaders = loaders(run.config, run.splits)
    if split_loaders["val"] is None:
        raise ConfigError(f"{run_dir}: the run has no validation split to choose a threshold on")
    trainer = cpu_trainer(run.config.trainer)
    probs = trainer.predict(task, split_loaders["val"])
    choice = choose_threshold(probs, dataset_targets(run.splits.val), objective, target)
    task.decision_threshold = choice.threshold
    metrics: dict[str, float] = {}
    for split in ("val", "test"):
        if split_loaders[split] is not None:
            metrics |= trainer.evaluate(task, split_loaders[split], split, curves=False).metrics
    config_path = run.run_dir / "model" / CONFIG_NAME
    stored = json.loads(config_path.read_text(encoding="utf-8"))
    stored["decision_threshold"] = choice.threshold
    stored["threshold_choice"] = {"objective": objective, "target": target, "chosen_on": "val"}
    config_path.write_text(json.dumps(stored, indent=2), encoding="utf-8")
    return choice, metrics


# ---- ensembles ---------------------------------------------------------------------------------------------------

EnsembleKind = Literal["binary", "multiclass", "multilabel", "regression"]


class Ensemble(nn.Module):
    """Average probabilities (``method="mean"``) or take a majority vote (``"vote"``) over trained models (ch. 12.4.3).

    The output is a log-score whose softmax (multi-class) or sigmoid (binary, multi-label) is the averaged
    probability or the vote share, so the usual classification task and metrics apply; for regression the
    members' outputs are averaged.
    """

    def __init__(
        self, models: Sequence[nn.Module], kind: EnsembleKind = "multiclass", method: Literal["mean", "vote"] = "mean"
    ) -> None:
        super().__init__()
        if len(models) < 2:
            raise ConfigError(f"an ensemble needs at least 2 models, got {len(models)}")
        if kind == "regression" and method == "vote":
            raise ConfigError("majority vote needs classes; use method='mean' for regression")
        self.members = nn.ModuleList(models)
        self.kind, self.method = kind, method

    def forward(self, x: Tensor) -> Tensor:
        outputs = torch.stack([member(x).float() for member in self.members])
        if self.kind == "regression":
            return outputs.mean(0)
        eps = 1e-7
        if self.kind == "multiclass":
            probs = outputs.softmax(-1)
            if self.method == "vote":
                probs = nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).float()
            return probs.mean(0).clamp_min(eps).log()
        probs = outputs.sigmoid()
        if self.method == "vote":
            probs = (probs > 0.5).float()
        return torch.logit(probs.mean(0), eps=eps)


def ensemble_runs(
    run_dirs: Sequence[str | Path], method: Literal["mean", "vote"] = "mean"
) -> tuple[dict[str, dict[str, float]], Task]:
    """Evaluate several trained runs of the same data and their ensemble on the validation and test splits.

    The ensemble's task is the first run's (loss, class weights, decision threshold, ...) with the ensemble as
    its model. Returns ``{"<run folder name>" | "ensemble": metrics}`` and that task (for predict or save).
    """
    runs = [load_run(d) for d in run_dirs]
    data = runs[0].config.data
    for run in runs[1:]:
        if run.config.data != data:
            raise ConfigError(f"{run.run_dir}: data differs from {runs[0].run_dir}; an ensemble needs the same data")
    first = runs[0]
    kind = first.splits.info.kind
    task = copy.copy(first.task)
    task.model = Ensemble([r.task.model for r in runs], kind=kind, method=method)
    split_loaders = loaders(first.config, first.splits)
    trainer = cpu_trainer(first.config.trainer)
    results: dict[str, dict[str, float]] = {}
    for name, candidate in [*((_label(r.run_dir), r.task) for r in runs), ("ensemble", task)]:
        metrics: dict[str, float] = {}
        for split in ("val", "test"):
            if split_loaders[split] is not None:
                metrics |= trainer.evaluate(candidate, split_loaders[split], split, curves=False).metrics
        results[name] = metrics
    return results, task


def _label(run_dir: Path) -> str:
    return f"{run_dir.parent.name}/{run_dir.name}"


def results_table(results: dict[str, dict[str, float]], keys: Sequence[str] | None = None) -> str:
    """Markdown table: one row per model, one column per metric."""
    keys = list(keys or next(iter(results.values())).keys())
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, metrics in results.items():
        cells = " | ".join(f"{metrics[k]:.4f}" if not math.isnan(metrics.get(k, math.nan)) else "—" for k in keys)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)
