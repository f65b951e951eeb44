"""A trained clinical risk model: raw patient records in, calibrated probabilities (or values) out, with the
decision threshold, per-feature attributions for one patient, and baselines and calibration in the run's report.

>>> result, summary = train_risk()                                               # breast cancer, ~10 s
>>> risk = RiskModel.load(result.run_dir)
>>> risk.predict_proba([{"mean radius": 17.9, ...}])                            # doctest: +SKIP
>>> risk.explain(record).top(5)                                                  # doctest: +SKIP

The model folder (``model/``: safetensors weights + ``config.json``) holds everything inference needs: the column
schema (how a record becomes a vector), the standardisation (inside the network), the calibration map and the
decision threshold. It loads without the training data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.figure import Figure
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, r2_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from tujie_core import ConfigError, DataError, RunResult, load_config, load_pretrained, train_from_config
from tujie_core.calibration import Calibration, Method, calibration_scores, fit_calibration, plot_calibration
from tujie_core.cli import plugin_flags
from tujie_core.evaluate import choose_threshold
from tujie_core.inference import (
    InferenceSummary,
    file_fingerprint,
    module_fingerprint,
    predict_stream,
    read_table_header,
    rejecting,
    table_records,
)
from tujie_core.models import Standardize
from tujie_core.plain import PlainModel, plain_model
from tujie_core.progress import Mode
from tujie_core.report import replace_section, save_figure
from tujie_core.run import load_run
from tujie_health.clinical.data import TableSchema, read_table

CONFIG_NAME = "config.json"
DEFAULT_CONFIG = "breast_cancer_risk"


def _model_dir(path: str | Path) -> Path:
    """A run folder's ``model/`` or a model folder itself."""
    path = Path(path)
    return path / "model" if (path / "model" / CONFIG_NAME).is_file() else path


@dataclass
class Explanation:
    """Integrated-gradients attributions (Sundararajan et al. 2017) of one record's output, per input column.

    The path runs from the training split's mean patient (``baseline``) to this one; the attributions add up to
    ``output - baseline_output`` (on the logit scale for classifiers, the target's unit for regression) up to the
    integration error ``gap``. A categorical column's one-hot parts are summed into the column.
    """

    output_name: str
    output: float
    baseline_output: float
    attributions: dict[str, float]
    values: dict[str, Any]
    gap: float

    def top(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` columns with the largest absolute attribution, largest first."""
        return sorted(self.attributions.items(), key=lambda kv: -abs(kv[1]))[:k]

    def plot(self, k: int = 12) -> Figure:
        """A horizontal bar chart of the ``k`` largest attributions (red raises the output, blue lowers it)."""
        items = self.top(k)[::-1]
        fig = Figure(figsize=(7, 0.35 * len(items) + 1.4))
        ax = fig.subplots()
        ax.barh(
            [f"{name} = {self.values.get(name, '')}" for name, _ in items],
            [v for _, v in items],
            color=["#c0392b" if v > 0 else "#2e86c1" for _, v in items],
        )
        ax.axvline(0, color="k", lw=0.8)
        ax.set(
            xlabel=f"contribution to {self.output_name}",
            title=f"{self.output_name}: {self.output:.3f} (mean patient {self.baseline_output:.3f})",
        )
        fig.tight_layout()
        return fig


class RiskModel:
    """The network of a risk run with its schema, calibration and decision threshold (see the module doc)."""

    def __init__(self, model: nn.Module, config: Mapping[str, Any]) -> None:
        if "schema" not in config:
            raise DataError("not a risk model: its config.json has no column schema (train it on data 'patients')")
        self.model = model.eval()
        self.config = dict(config)
        self.schema = TableSchema.from_dict(config["schema"])
        self.kind: Literal["binary", "multiclass", "regression"] = self.schema.kind
        self.class_names: list[str] = list(self.schema.class_names)
        self.calibration = Calibration.from_dict(config.get("calibration", {"method": "none"}))
        self.decision_threshold = float(config.get("decision_threshold", 0.5))

    @classmethod
    def load(cls, path: str | Path) -> RiskModel:
        """From a run folder or its ``model/`` folder (safetensors weights; no pickle)."""
        model, config = load_pretrained(_model_dir(path))
        return cls(model, config)

    @property
    def output_name(self) -> str:
        if self.kind == "binary":
            return f"logit of {self.class_names[1]}"
        return self.schema.target if self.kind == "regression" else "logit of the predicted class"

    def encode(self, records: Sequence[Mapping[str, Any]], where: str = "records") -> np.ndarray:
        """Records (dicts of column → value) as the model's input matrix; DataError naming the record and column."""
        return self.schema.encode(records, where, first_row=1)

    @torch.no_grad()
    def outputs(self, x: np.ndarray) -> np.ndarray:
        """Raw network outputs for encoded inputs: logits, or values in the target's unit."""
        return self.model(torch.as_tensor(np.asarray(x, dtype=np.float32))).double().numpy()

    def probabilities(self, x: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """Binary: the positive class's probability ``(N,)``; multiclass ``(N, C)``; regression: the values."""
        out = self.outputs(x)
        if self.kind == "regression":
            return out[:, 0]
        probs = 1 / (1 + np.exp(-out[:, 0])) if self.kind == "binary" else _softmax(out)
        return self.calibration.apply(probs) if calibrated else probs

    def predict_proba(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Calibrated probabilities (or values) for raw records."""
        return self.probabilities(self.encode(records))

    def labels(self, x: np.ndarray) -> list[str] | np.ndarray:
        """Class names at the decision threshold (binary; compared with the uncalibrated probability, on which the
        threshold was chosen: calibration is monotone, so the patients flagged are the same), or values."""
        if self.kind == "regression":
            return self.probabilities(x)
        raw = self.probabilities(x, calibrated=False)
        if self.kind == "binary":
            return [self.class_names[int(p > self.decision_threshold)] for p in raw]
        return [self.class_names[int(i)] for i in raw.argmax(1)]

    def predict(self, records: Sequence[Mapping[str, Any]]) -> list[str] | np.ndarray:
        return self.labels(self.encode(records))

    @property
    def calibrated_threshold(self) -> float:
        """The decision threshold on the calibrated probability scale (what a clinician sees)."""
        return float(self.calibration.apply(np.asarray([self.decision_threshold]))[0])

    def plain(self) -> PlainModel:
        """The model as standardisation + affine layers + activations over a float vector (for encrypted
        inference); DataError naming the layer when it has no such form."""
        output = {"binary": "logit", "multiclass": "logits", "regression": "value"}[self.kind]
        return plain_model(self.model, output, require_standardisation=True)

    def explain(self, record: Mapping[str, Any], steps: int = 64) -> Explanation:
        """Per-column attributions of one record's output (see :class:`Explanation`)."""
        x = torch.as_tensor(self.encode([record], "record")[0])
        baseline = self._baseline()
        alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps  # midpoint rule
        path = (baseline + alphas[:, None] * (x - baseline)).requires_grad_(True)
        out = self.model(path)
        index = int(out[-1].argmax()) if self.kind == "multiclass" else 0
        out[:, index].sum().backward()
        assert path.grad is not None
        parts = ((x - baseline) * path.grad.mean(0)).double().numpy()
        with torch.no_grad():
            value, base_value = (float(v) for v in self.model(torch.stack([x, baseline]))[:, index])
        attributions: dict[str, float] = {}
        start = 0
        for column in self.schema.columns:
            width = len(column.encoded_names)
            attributions[column.name] = float(parts[start : start + width].sum())
            start += width
        name = self.output_name if self.kind != "multiclass" else f"logit of {self.class_names[index]}"
        gap = value - base_value - sum(attributions.values())
        values = {c.name: record.get(c.name) for c in self.schema.columns}
        return Explanation(name, value, base_value, attributions, values, gap)

    def typical_record(self) -> dict[str, Any]:
        """The training split's mean patient as a record: numeric columns at their mean, categorical ones at their
        most frequent category (the explanation baseline, and a starting point for a form)."""
        mean = self._baseline().double().numpy()
        record: dict[str, Any] = {}
        start = 0
        for column in self.schema.columns:
            width = len(column.encoded_names)
            part = mean[start : start + width]
            record[column.name] = float(part[0]) if column.kind == "numeric" else column.categories[int(part.argmax())]
            start += width
        return record

    def _baseline(self) -> torch.Tensor:
        """The training split's mean encoded patient (the input standardisation's mean)."""
        first = next((m for m in self.model.modules() if isinstance(m, Standardize) and not m.inverse), None)
        if first is None:
            raise DataError("explain: the model has no input standardisation to take the mean patient from")
        return first.mean.detach().float().clone()  # type: ignore[operator]

    def predict_file(
        self, path: str | Path, output: str | Path, *, resume: bool = True, progress: Mode = "none"
    ) -> InferenceSummary:
        """Predictions for every row of a CSV/TSV into ``output`` (``row`` = file line, ``label``, probabilities or
        ``prediction``), streaming; a row that cannot be encoded (missing or non-numeric value, unknown category,
        wrong field count) goes to ``output.rejects.csv`` with the reason and the good rows still come out."""
        path = Path(path)
        header, _ = read_table_header(path)
        missing = [c.name for c in self.schema.columns if c.name not in header]
        if missing:
            raise DataError(f"{path}: no column(s) {', '.join(missing)} (the model needs {len(self.schema.columns)})")

        def predict(items: list[np.ndarray]) -> list[list[Any]]:
            x = np.stack(items)
            values = self.probabilities(x)
            if self.kind == "regression":
                return [[f"{v:.6g}"] for v in values]
            labels = self.labels(x)
            if self.kind == "binary":
                return [[label, f"{p:.6f}"] for label, p in zip(labels, values, strict=True)]
            return [[label, *(f"{p:.6f}" for p in row)] for label, row in zip(labels, values, strict=True)]

        if self.kind == "regression":
            columns = ["prediction"]
        elif self.kind == "binary":
            columns = ["label", f"p_{self.class_names[1]}"]
        else:
            columns = ["label", *(f"p_{n}" for n in self.class_names)]
        return predict_stream(
            lambda: table_records(path),
            predict,
            output,
            header=columns,
            prepare=rejecting(lambda record: self.schema.encode_row(record, "row"), "row, ", "row: "),
            job={"input": file_fingerprint(path), "model": module_fingerprint(self.model), "config": self.config},
            resume=resume,
            progress=progress,
        )

    def evaluate(self, path: str | Path) -> dict[str, float]:
        """Scores on a labelled CSV (the target column present): see :func:`score`. DataError at a bad row."""
        path = Path(path)
        _, rows = read_table(path)
        if not rows:
            raise DataError(f"{path}: no data rows")
        if self.schema.target not in rows[0]:
            raise DataError(f"{path}: no target column '{self.schema.target}' to evaluate against")
        x = self.schema.encode(rows, str(path))
        y = np.asarray([self.schema.target_value(r, f"{path}: row {i}") for i, r in enumerate(rows, 2)])
        return score(self, x, y)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _probability_scores(probs: np.ndarray, y: np.ndarray, kind: str) -> dict[str, float]:
    scores = calibration_scores(probs, y)
    if kind == "binary":
        scores["roc_auc"] = float(roc_auc_score(y, probs)) if len(np.unique(y)) == 2 else math.nan
        scores["accuracy"] = float(accuracy_score(y, probs > 0.5))
    else:
        scores["accuracy"] = float(accuracy_score(y, probs.argmax(1)))
        scores["log_loss"] = float(log_loss(y, probs, labels=list(range(probs.shape[1]))))
    return scores


def _value_scores(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {
        "rmse": float(np.sqrt(np.mean((pred - y) ** 2))),
        "mae": float(mean_absolute_error(y, pred)),
        "r2": float(r2_score(y, pred)),
    }


def score(risk: RiskModel, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Binary: ROC-AUC, ECE and Brier before and after calibration, and sensitivity/specificity at the decision
    threshold; multiclass: accuracy, log loss, ECE, Brier; regression: RMSE, MAE, R²."""
    if risk.kind == "regression":
        return _value_scores(risk.probabilities(x), y)
    raw, calibrated = risk.probabilities(x, calibrated=False), risk.probabilities(x)
    scores = {f"{k}": v for k, v in _probability_scores(calibrated, y, risk.kind).items()}
    scores |= {f"uncalibrated_{k}": v for k, v in calibration_scores(raw, y).items()}
    if risk.kind == "binary":
        flagged, positive = raw > risk.decision_threshold, y.astype(bool)
        scores["sensitivity"] = float(flagged[positive].mean()) if positive.any() else math.nan
        scores["specificity"] = float((~flagged[~positive]).mean()) if (~positive).any() else math.nan
        scores["accuracy"] = float((flagged == positive).mean())
    return scores


# ---- finishing a run: calibration, threshold, baselines ---------------------------------------------------------
@dataclass
class RiskSummary:
    """What :func:`finish_risk_run` measured (``scores[split][model]`` → metric → value)."""

    run_dir: Path
    calibration: Calibration
    decision_threshold: float
    scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    plain_form: str | None = None

    def table(self, split: str) -> list[tuple[str, dict[str, float]]]:
        return list(self.scores.get(split, {}).items())


def _arrays(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = dataset.tensors
    return x.numpy().astype(np.float64), y.numpy()


def baselines(kind: str, seed: int = 0) -> dict[str, Any]:
    """The scikit-learn models every risk run is compared with, fitted on the same training rows."""
    if kind == "regression":
        return {
            "ridge": make_pipeline(StandardScaler(), Ridge(alpha=1.0)),
            "gradient boosting": HistGradientBoostingRegressor(random_state=seed),
        }
    return {
        "logistic regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
        "gradient boosting": HistGradientBoostingClassifier(random_state=seed),
    }


def _baseline_output(model: Any, x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "regression":
        return model.predict(x)
    probs = model.predict_proba(x)
    return probs[:, 1] if kind == "binary" else probs


def finish_risk_run(
    run_dir: str | Path,
    calibration: Method = "temperature",
    target_sensitivity: float | None = None,
) -> RiskSummary:
    """Calibrate a trained risk run on its validation split, choose its decision threshold (for
    ``target_sensitivity`` when given, else 0.5 on the uncalibrated scale), fit the baselines on its training
    split, score everything on validation and test, and write it all into ``model/config.json`` and the report.

    Calibration and threshold are fitted on validation only; test figures are untouched by both.
    """
    run = load_run(run_dir)
    info, splits = run.splits.info, run.splits
    if run.config.data.name != "patients" or "schema" not in run.model_config:
        raise ConfigError(f"{run_dir}: not a risk run (data 'patients')")
    if splits.val is None:
        raise ConfigError(f"{run_dir}: the run has no validation split to calibrate on (data.val_fraction > 0)")
    risk = RiskModel(run.task.model, run.model_config)
    kind = risk.kind
    x_train, y_train = _arrays(splits.train)
    x_val, y_val = _arrays(splits.val)
    evaluated = {"val": (x_val, y_val), **({"test": _arrays(splits.test)} if splits.test is not None else {})}
    method: Method = calibration if kind != "regression" else "none"
    if method == "isotonic" and kind == "multiclass":
        raise ConfigError("calibration: isotonic is for binary risk models; use temperature for multiclass")
    risk.calibration = fit_calibration(risk.probabilities(x_val, calibrated=False), y_val, method)
    choice = None
    if target_sensitivity is not None:
        if kind != "binary":
            raise ConfigError("target_sensitivity applies to binary risk models only")
        choice = choose_threshold(risk.probabilities(x_val, calibrated=False), y_val, "recall", target_sensitivity)
        risk.decision_threshold = choice.threshold
    fitted = {name: model.fit(x_train, y_train) for name, model in baselines(kind, run.config.seed).items()}
    summary = RiskSummary(Path(run_dir), risk.calibration, risk.decision_threshold)
    ours = f"tujie {run.config.model.name}"
    for split, (x, y) in evaluated.items():
        rows = {ours: score(risk, x, y)}
        for name, model in fitted.items():
            out = _baseline_output(model, x, kind)
            rows[name] = _value_scores(out, y) if kind == "regression" else _probability_scores(out, y, kind)
        summary.scores[split] = rows
    try:
        summary.plain_form = risk.plain().describe()
        inference = {"form": "plain", "function": summary.plain_form}
    except DataError as exc:
        inference = {"form": "network", "why_not_plain": str(exc)}
    model_config_path = _model_dir(run_dir) / CONFIG_NAME
    stored = json.loads(model_config_path.read_text(encoding="utf-8"))
    stored["calibration"] = risk.calibration.to_dict()
    stored["decision_threshold"] = risk.decision_threshold
    if choice is not None:
        stored["threshold_choice"] = {"objective": "recall", "target": target_sensitivity, "chosen_on": "val"}
    stored["inference"] = inference
    model_config_path.write_text(json.dumps(stored, indent=2), encoding="utf-8")
    _report(run.run_dir, risk, summary, evaluated, choice, target_sensitivity, info.class_names)
    return summary


def _report(
    run_dir: Path,
    risk: RiskModel,
    summary: RiskSummary,
    evaluated: dict[str, tuple[np.ndarray, np.ndarray]],
    choice: Any,
    target_sensitivity: float | None,
    class_names: list[str],
) -> None:
    report = run_dir / "report.md"
    if not report.is_file():
        return
    split = "test" if "test" in evaluated else "val"
    metric_names = sorted({k for row in summary.scores[split].values() for k in row})
    lines = [
        f"On the {split} split ({len(evaluated[split][1])} patients); baselines fitted on the same training rows.",
        "",
        "| model | " + " | ".join(metric_names) + " |",
        "|---" * (len(metric_names) + 1) + "|",
    ]
    for name, row in summary.scores[split].items():
        lines.append(f"| {name} | " + " | ".join(f"{row.get(m, math.nan):.4f}" for m in metric_names) + " |")
    replace_section(report, "## Baselines", "\n".join(lines))
    if risk.kind == "regression":
        return
    x, y = evaluated[split]
    cal = risk.calibration
    how = {"none": "none", "temperature": f"temperature scaling, T = {cal.temperature:.3f}"}.get(
        cal.method, f"isotonic regression ({len(cal.knots_x)} knots)"
    )
    body = [
        f"Fitted on the validation split: {how}.",
        "",
        "| split | ECE before | ECE after | Brier before | Brier after |",
    ]
    body.append("|---|---|---|---|---|")
    ours = next(iter(summary.scores[split]))  # the run's own model comes first
    for name, row in ((s, summary.scores[s][ours]) for s in evaluated):
        body.append(
            f"| {name} | {row['uncalibrated_ece']:.4f} | {row['ece']:.4f} | {row['uncalibrated_brier']:.4f} | "
            f"{row['brier']:.4f} |"
        )
    figure = plot_calibration({"before": risk.probabilities(x, calibrated=False), "after": risk.probabilities(x)}, y)
    save_figure(figure, run_dir / "plots" / "reliability_calibrated.png")
    body += ["", f"![reliability before and after calibration ({split})](plots/reliability_calibrated.png)"]
    replace_section(report, "## Calibration", "\n".join(body))
    if risk.kind == "binary":
        row = summary.scores[split][ours]
        rule = (
            f"chosen on validation for sensitivity ≥ {target_sensitivity} (validation sensitivity {choice.recall:.4f}, "
            f"precision {choice.precision:.4f})"
            if choice is not None
            else "the default"
        )
        text = (
            f"A patient is flagged {class_names[1]} when the model's probability exceeds "
            f"{risk.decision_threshold:.4f} ({risk.calibrated_threshold:.4f} calibrated): {rule}. On {split}: "
            f"sensitivity {row['sensitivity']:.4f}, specificity {row['specificity']:.4f}."
        )
        replace_section(report, "## Decision threshold", text)


def train_risk(
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    calibration: Method = "temperature",
    target_sensitivity: float | None = None,
    dp: str | None = None,
    resume: str | Path | None = None,
) -> tuple[RunResult, RiskSummary]:
    """Train a risk run (default: an MLP on the shipped breast-cancer set), then :func:`finish_risk_run`."""
    from tujie_health.cli import bundled_config

    raw = load_config(config or bundled_config(DEFAULT_CONFIG), list(overrides), plugin_flags(dp))
    result = train_from_config(raw, resume=resume)
    return result, finish_risk_run(result.run_dir, calibration, target_sensitivity)
