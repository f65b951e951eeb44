"""Clinical risk models with tujie_health on scikit-learn's breast-cancer (WDBC) and diabetes tables, 5-fold.

Every fold is a full ``train_risk`` run: the test split is one of 5 stratified folds, validation 15 % of the rest
(early stopping, calibration and the threshold are fitted on it, never on the fold), the MLP (30 → 32 → 1,
standardisation inside the model) next to logistic regression and gradient boosting fitted on the same training
rows. Breast cancer: ROC-AUC, Brier score and ECE (15 bins) before and after calibration (temperature, isotonic),
and accuracy at 0.5 against the 97.5 % of the dataset's authors (MSM-T separating plane, repeated 10-fold CV, UCI
``wdbc.names``). Diabetes: RMSE and R² of the MLP against ridge regression on the same folds.

    python benchmarks/health_clinical.py [--quick] [--json PATH] [--folds 5] [--epochs 40]

``--quick``: 2 folds of 10 epochs (≤ 2 min; not for figures).
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from _common import Row, parse_args, report

from tujie_health.clinical import finish_risk_run, train_risk

WDBC = "UCI wdbc.names (Street, Wolberg & Mangasarian 1993): MSM-T, repeated 10-fold CV"
SAME_FOLDS = "same folds, scikit-learn"


def folds_of(shipped: str, out: Path, folds: int, epochs: int, seed: int) -> tuple[list[dict], float]:
    """Per fold: ``{model: test scores}``, with the MLP calibrated by temperature and by isotonic regression."""
    results, seconds = [], 0.0
    for fold in range(folds):
        overrides = [
            f"output_dir={out}",
            f"name={shipped}-fold{fold}",
            f"data.shipped={shipped}",
            f"data.folds={folds}",
            f"data.fold={fold}",
            f"trainer.max_epochs={epochs}",
            f"trainer.seed={seed}",
            "trainer.progress=none",
        ]
        start = time.perf_counter()
        result, summary = train_risk(overrides=overrides, calibration="temperature")
        seconds += time.perf_counter() - start
        scores = dict(summary.scores["test"])
        if shipped == "breast_cancer":
            ours = next(iter(scores))
            scores["MLP, temperature"] = scores.pop(ours)
            scores["MLP, isotonic"] = finish_risk_run(result.run_dir, "isotonic").scores["test"][ours]
        results.append(scores)
        key = "roc_auc" if shipped == "breast_cancer" else "rmse"
        shown = ", ".join(f"{m} {key} {s[key]:.4f}" for m, s in scores.items())
        print(f"{shipped} fold {fold + 1}/{folds} ({time.perf_counter() - start:.0f} s): {shown}", flush=True)
    return results, seconds


def mean(results: list[dict], model: str, metric: str) -> tuple[float, float]:
    values = np.array([r[model][metric] for r in results])
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def breast_cancer_rows(results: list[dict], seconds: float, folds: int) -> list[Row]:
    rows: list[Row] = []
    logistic_auc, _ = mean(results, "logistic regression", "roc_auc")
    by_model: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for model in results[0]:
        for metric in ("roc_auc", "brier", "ece", "uncalibrated_brier", "uncalibrated_ece"):
            if metric in results[0][model]:
                by_model[model][metric] = mean(results, model, metric)
    for model, metrics in by_model.items():
        name = f"breast cancer, {model} ({folds}-fold)"
        auc, sd = metrics["roc_auc"]
        rows.append(
            Row(
                name,
                f"test ROC-AUC (± {sd:.4f})",
                auc,
                logistic_auc,
                f"logistic regression, {SAME_FOLDS}",
                None,
                True,
                "",
            )
        )
        rows.append(Row(name, "test Brier", metrics["brier"][0], None, "", None, False, ""))
        rows.append(Row(name, "test ECE", metrics["ece"][0], None, "", None, False, ""))
        if "uncalibrated_ece" in metrics:
            before = metrics["uncalibrated_ece"][0]
            rows.append(Row(name, "test ECE before calibration", before, None, "", None, False, ""))
            rows.append(
                Row(name, "test Brier before calibration", metrics["uncalibrated_brier"][0], None, "", None, False, "")
            )
    accuracy, _ = mean(results, "MLP, temperature", "accuracy")
    rows.append(Row(f"breast cancer, MLP ({folds}-fold)", "test accuracy", accuracy, 0.975, WDBC, None, True, ""))
    logistic_accuracy, _ = mean(results, "logistic regression", "accuracy")
    rows.append(
        Row(
            f"breast cancer, logistic regression ({folds}-fold)",
            "test accuracy",
            logistic_accuracy,
            0.975,
            WDBC,
            None,
            True,
            "",
        )
    )
    rows.append(Row(f"breast cancer, MLP ({folds} folds)", "train wall time", seconds, None, "", None, False, "s"))
    return rows


def diabetes_rows(results: list[dict], seconds: float, folds: int) -> list[Row]:
    rows = []
    ours = next(iter(results[0]))
    ridge_rmse, _ = mean(results, "ridge", "rmse")
    ridge_r2, _ = mean(results, "ridge", "r2")
    for model in results[0]:
        rmse, sd = mean(results, model, "rmse")
        r2, _ = mean(results, model, "r2")
        name = f"diabetes, {model} ({folds}-fold)"
        rows.append(Row(name, f"test RMSE (± {sd:.2f})", rmse, ridge_rmse, f"ridge, {SAME_FOLDS}", None, False, ""))
        rows.append(Row(name, "test R²", r2, ridge_r2, f"ridge, {SAME_FOLDS}", None, True, ""))
    rows.append(Row(f"diabetes, {ours} ({folds} folds)", "train wall time", seconds, None, "", None, False, "s"))
    return rows


def main() -> None:
    def options(parser) -> None:
        parser.add_argument("--folds", type=int, default=5)
        parser.add_argument("--epochs", type=int, default=40)
        parser.add_argument("--seed", type=int, default=0)

    args = parse_args(__doc__.splitlines()[0], options)
    folds, epochs = (2, 10) if args.quick else (args.folds, args.epochs)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        results, seconds = folds_of("breast_cancer", Path(tmp), folds, epochs, args.seed)
        rows += breast_cancer_rows(results, seconds, folds)
        results, seconds = folds_of("diabetes", Path(tmp), folds, epochs, args.seed)
        rows += diabetes_rows(results, seconds, folds)
    report("health_clinical", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
