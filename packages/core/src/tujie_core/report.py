"""Evaluation report: a markdown file with a metric table and PNG plots (matplotlib, no display needed).

Plots: learning curves from the metrics history; for classification a ROC curve, a precision-recall curve,
a confusion matrix and a reliability diagram.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from tujie_core.trainer import Evaluation

PlotFn = Callable[[Any, list[str]], Figure]
MAX_CURVES = 10  # per-class curves drawn for multi-class ROC/PR; more classes are summarised by the macro metric


def metric_table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per metric, one column per split (``{"test": {"accuracy": 0.9}}``)."""
    splits = list(rows)
    names = sorted({name for values in rows.values() for name in values})
    lines = ["| metric | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for name in names:
        cells = [_fmt(rows[s].get(name)) for s in splits]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4f}"


def _per_class(value: Any) -> list[tuple[np.ndarray, ...]]:
    """Binary curve outputs are tensors, multi-class ones lists per class or stacked tensors: normalise."""
    first, second = value[0], value[1]
    if isinstance(first, Tensor) and first.ndim == 1:
        return [(first.numpy(), second.numpy())]
    return [(np.asarray(a), np.asarray(b)) for a, b in zip(first, second, strict=True)]


def plot_roc(value: Any, names: list[str]) -> Figure:
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    curves = _per_class(value)
    for i, (fpr, tpr) in enumerate(curves[:MAX_CURVES]):
        label = "positive class" if len(curves) == 1 else f"class {names[i] if i < len(names) else i}"
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    return fig


def plot_pr(value: Any, names: list[str]) -> Figure:
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    curves = _per_class(value)
    for i, (precision, recall) in enumerate(curves[:MAX_CURVES]):
        label = "positive class" if len(curves) == 1 else f"class {names[i] if i < len(names) else i}"
        ax.plot(recall, precision, label=label)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower left")
    return fig


def plot_confusion(value: Tensor, names: list[str]) -> Figure:
    counts = value.numpy()
    if counts.ndim == 3:  # multilabel: one 2×2 per label, show them summed
        counts = counts.sum(0)
        names = ["negative", "positive"]
    n = counts.shape[0]
    names = names if len(names) == n else [str(i) for i in range(n)]
    rates = counts / np.clip(counts.sum(1, keepdims=True), 1, None)
    fig = Figure(figsize=(1.2 + 0.5 * n, 1 + 0.5 * n))
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    int(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title="Confusion matrix")
    ax.set_xticklabels(names, rotation=90 if n > 6 else 0, fontsize=7)
    ax.set_yticklabels(names, fontsize=7)
    fig.colorbar(image, ax=ax, fraction=0.046, label="row-normalised rate")
    fig.tight_layout()
    return fig


def plot_reliability(bins: dict[str, Tensor], names: list[str]) -> Figure:
    edges = bins["edges"].numpy()
    centers = (edges[:-1] + edges[1:]) / 2
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.bar(
        centers,
        np.nan_to_num(bins["outcome"].numpy()),
        width=edges[1] - edges[0],
        edgecolor="k",
        alpha=0.7,
        label="observed",
    )
    reliability_axes(ax)
    return fig


def reliability_axes(ax: Any, xlabel: str = "predicted confidence") -> None:
    """The diagonal, labels, limits and legend every reliability diagram shares."""
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax.set(xlabel=xlabel, ylabel="observed frequency", title="Reliability diagram", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)


def plot_learning_curves(history: Sequence[dict[str, float]]) -> Figure | None:
    if not history:
        return None
    epochs = [h["epoch"] for h in history]
    logged = {k.split("/", 1)[1] for h in history for k in h if "/" in k}
    groups = [name for name in CURVE_PRIORITY if name in logged][:4] or sorted(logged)[:4]
    fig = Figure(figsize=(4 * len(groups), 3.2))
    axes = fig.subplots(1, len(groups), squeeze=False)
    for ax, name in zip(axes[0], groups, strict=False):
        for split in ("train", "val"):
            key = f"{split}/{name}"
            if any(key in h for h in history):
                ax.plot(epochs, [h.get(key, math.nan) for h in history], marker="o", ms=3, label=split)
        ax.set(title=name, xlabel="epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


PLOTS: dict[str, tuple[str, str, PlotFn]] = {
    "roc": ("roc.png", "ROC curve", plot_roc),
    "pr": ("pr.png", "Precision-recall curve", plot_pr),
    "confusion": ("confusion_matrix.png", "Confusion matrix", plot_confusion),
    "calibration": ("reliability.png", "Reliability diagram", plot_reliability),
}
# learning-curve panels, in this order, when logged
CURVE_PRIORITY = ("loss", "accuracy", "f1_macro", "roc_auc", "r2", "rmse", "mae", "ece")


def save_figure(fig: Figure, path: Path) -> None:
    """Write a figure drawn on its own canvas (no pyplot, no global backend switch: notebooks keep theirs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def replace_section(report: Path, heading: str, body: str) -> None:
    """Put ``heading`` + ``body`` into a markdown file, replacing that section (up to the next ``## ``) if present."""
    text = report.read_text(encoding="utf-8")
    start = text.find(f"\n{heading}\n")
    section = f"\n{heading}\n\n{body.rstrip()}\n"
    if start < 0:
        text = text.rstrip("\n") + "\n" + section
    else:
        end = text.find("\n## ", start + len(heading) + 2)
        text = text[:start] + section + (text[end:] if end >= 0 else "")
    report.write_text(text, encoding="utf-8")


def write_report(
    run_dir: str | Path,
    *,
    title: str,
    evaluations: dict[str, Evaluation],
    history: Sequence[dict[str, float]] = (),
    class_names: Sequence[str] = (),
    sections: Sequence[str] = (),
    header: str = "",
) -> Path:
    """Write ``report.md`` and ``plots/*.png`` into ``run_dir``; returns the report's path.

    ``evaluations`` maps a split name to its :class:`Evaluation`; plots are drawn for the last split given.
    """
    run_dir = Path(run_dir)
    plots_dir = run_dir / "plots"
    lines = [f"# {title}", ""]
    if header:
        lines += [header, ""]
    rows = {split: {k.split("/", 1)[-1]: v for k, v in ev.metrics.items()} for split, ev in evaluations.items()}
    if rows:
        lines += ["## Metrics", "", metric_table(rows), ""]
    figures: list[tuple[str, str]] = []
    curves_fig = plot_learning_curves(history)
    if curves_fig is not None:
        save_figure(curves_fig, plots_dir / "learning_curves.png")
        figures.append(("Learning curves", "plots/learning_curves.png"))
    if evaluations:
        split, evaluation = list(evaluations.items())[-1]
        for key, value in evaluation.curves.items():
            if key in PLOTS:
                filename, caption, plot = PLOTS[key]
                save_figure(plot(value, list(class_names)), plots_dir / filename)
                figures.append((f"{caption} ({split} split)", f"plots/{filename}"))
    if figures:
        lines += ["## Plots", ""]
        for caption, path in figures:
            lines += [f"### {caption}", "", f"![{caption}]({path})", ""]
    for section in sections:
        lines += [section, ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
