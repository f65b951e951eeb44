"""Clinical risk models: patient tables (imputation, one-hot, refusals), the trained model's save/load, plain form,
calibration, threshold, attributions, streamed prediction with rejects and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tujie_core import DataError
from tujie_health.clinical import RiskModel, patients, plain_model, train_risk
from tujie_health.clinical.data import shipped_table

FAST = ["trainer.max_epochs=6", "trainer.progress=none"]


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _cohort(path: Path, n: int = 160, seed: int = 0) -> Path:
    """Age, a smoker flag (text), a blood value with some gaps, and an outcome that depends on all three."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        age = rng.uniform(30, 80)
        smoker = rng.choice(["yes", "no", "former"])
        value = rng.normal(5, 2)
        risk = 0.08 * (age - 55) + (1.5 if smoker == "yes" else 0) + 0.5 * (value - 5)
        outcome = "event" if risk + rng.normal(0, 1) > 0.5 else "none"
        rows.append([round(age, 1), smoker, "" if i % 17 == 3 else round(value, 2), outcome])
    return _write(path, ["age", "smoker", "marker", "outcome"], rows)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("risk")
    result, summary = train_risk(overrides=[f"output_dir={out}", *FAST], target_sensitivity=0.95)
    return result.run_dir, summary


def test_the_shipped_tables_are_real_records() -> None:
    header, rows, target, positive = shipped_table("breast_cancer")
    assert len(rows) == 569 and target == "diagnosis" and positive == "malignant" and len(header) == 31
    assert sum(r["diagnosis"] == "malignant" for r in rows) == 212
    header, rows, target, _ = shipped_table("diabetes")
    assert len(rows) == 442 and rows[0]["age"] == 59.0  # unscaled: years


def test_a_missing_value_is_refused_naming_row_and_column_unless_imputed(tmp_path: Path) -> None:
    path = _cohort(tmp_path / "cohort.csv")
    with pytest.raises(DataError, match=r"cohort.csv: row 5, column 'marker': missing value"):
        patients(path, target="outcome")
    splits = patients(path, target="outcome", impute="median", positive="event")
    info = splits.info
    assert info.kind == "binary" and info.class_names == ["none", "event"]
    assert info.feature_names == ["age", "smoker=former", "smoker=no", "smoker=yes", "marker"]
    x = splits.train.tensors[0]
    assert torch.isfinite(x).all() and set(x[:, 1:4].sum(1).tolist()) == {1.0}  # exactly one category on
    schema = info.metadata["schema"]
    marker = next(c for c in schema["columns"] if c["name"] == "marker")
    train_markers = [v for v in x[:, 4].tolist()]
    assert marker["fill"] == pytest.approx(float(np.median(train_markers)), abs=0.05)


def test_a_text_column_must_be_declared_when_listed_numeric(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", ["a", "y"], [["high" if i % 4 == 0 else i, i % 2] for i in range(16)])
    with pytest.raises(DataError, match=r"t.csv: column 'a': 'high' is not a number"):
        patients(path, target="y", categorical=[], val_fraction=0.25, test_fraction=0.25)
    with pytest.raises(DataError, match=r"no column 'nope'"):
        patients(path, target="nope")


def test_outer_folds_partition_the_rows() -> None:
    tests = [{tuple(row) for row in patients(folds=5, fold=k).test.tensors[0].tolist()} for k in range(5)]
    assert [len(t) for t in tests] == [114, 114, 114, 114, 113] and len(set().union(*tests)) == 569


def test_save_load_gives_identical_probabilities_and_a_plain_form(trained) -> None:
    run_dir, summary = trained
    loaded = RiskModel.load(run_dir)
    again = RiskModel.load(run_dir / "model")
    _, rows, _, _ = shipped_table("breast_cancer")
    p1, p2 = loaded.predict_proba(rows[:50]), again.predict_proba(rows[:50])
    np.testing.assert_array_equal(p1, p2)
    plain = loaded.plain()
    x = loaded.encode(rows[:50])
    np.testing.assert_allclose(plain(x)[:, 0], loaded.outputs(x)[:, 0], atol=1e-4)
    saved = json.loads((run_dir / "model" / "config.json").read_text())
    assert saved["inference"] == {"form": "plain", "function": plain.describe()}
    assert plain.describe().startswith("standardise(30) → linear(30→32) → relu → linear(32→1)")
    assert saved["calibration"]["method"] == "temperature" and saved["threshold_choice"]["target"] == 0.95
    # the threshold was chosen for sensitivity ≥ 0.95 on validation
    assert summary.scores["val"]["tujie mlp"]["sensitivity"] >= 0.95
    assert {"logistic regression", "gradient boosting"} <= set(summary.scores["test"])
    report = (run_dir / "report.md").read_text()
    assert "## Calibration" in report and "## Baselines" in report and "## Decision threshold" in report
    assert (run_dir / "plots" / "reliability_calibrated.png").stat().st_size > 1000


def test_plain_form_refuses_layers_it_cannot_express() -> None:
    from tujie_core import create_model

    model = create_model(
        "mlp", input_shape=(3,), num_outputs=1, hidden=[4], batch_norm=True, input_mean=[0] * 3, input_std=[1] * 3
    )
    with pytest.raises(DataError, match=r"layer 3 \(BatchNorm1d\) has no plain form"):
        plain_model(model)
    with pytest.raises(DataError, match="standardisation inside it"):
        plain_model(create_model("mlp", input_shape=(3,), num_outputs=1, hidden=[4]), require_standardisation=True)


def test_calibration_lowers_ece_of_an_overconfident_model(trained) -> None:
    run_dir, _ = trained
    risk = RiskModel.load(run_dir)
    last = [m for m in risk.model if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # make it overconfident: logits × 8
        last.weight.mul_(8)
        last.bias.mul_(8)
    from tujie_core.calibration import calibration_scores, fit_calibration

    data = patients()
    x_val, y_val = (t.numpy() for t in data.val.tensors)
    x_test, y_test = (t.numpy() for t in data.test.tensors)
    raw_val, raw_test = risk.probabilities(x_val, calibrated=False), risk.probabilities(x_test, calibrated=False)
    calibration = fit_calibration(raw_val, y_val, "temperature")
    assert calibration.temperature > 2
    before, after = calibration_scores(raw_test, y_test), calibration_scores(calibration.apply(raw_test), y_test)
    assert after["ece"] < before["ece"] and after["brier"] <= before["brier"] + 1e-9
    iso = fit_calibration(raw_val, y_val, "isotonic")
    assert calibration_scores(iso.apply(raw_val), y_val)["ece"] < calibration_scores(raw_val, y_val)["ece"]


def test_attributions_add_up_to_the_output_change(trained) -> None:
    run_dir, _ = trained
    risk = RiskModel.load(run_dir)
    _, rows, _, _ = shipped_table("breast_cancer")
    explanation = risk.explain(rows[0])
    total = sum(explanation.attributions.values())
    assert abs(explanation.gap) < 0.05 * max(1.0, abs(total))
    assert len(explanation.attributions) == 30 and explanation.top(3)[0][0] in explanation.attributions
    assert explanation.output_name == "logit of malignant"


def test_predict_file_rejects_bad_rows_and_keeps_every_good_one(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    cohort = _cohort(tmp_path / "cohort.csv")
    data = [f"data.path={cohort}", "data.target=outcome", "data.impute=mean", "data.positive=event"]
    result, _ = train_risk(overrides=[f"output_dir={out}", *FAST, *data], calibration="isotonic")
    risk = RiskModel.load(result.run_dir)
    rows = [[60, "yes", 4.2], [45, "sometimes", 5.0], [50, "no", ""], [70, "former", "abc"], [40, "no"], [33, "no", 1]]
    path = _write(tmp_path / "new.csv", ["age", "smoker", "marker"], rows)
    summary = risk.predict_file(path, tmp_path / "pred.csv")
    assert summary.predicted == 3 and summary.rejected == 3  # row 3: unknown category, 5: not a number, 6: ragged
    with (tmp_path / "pred.csv").open() as handle:
        got = list(csv.DictReader(handle))
    assert [r["row"] for r in got] == ["2", "4", "7"] and all(0 <= float(r["p_event"]) <= 1 for r in got)
    rejects = (tmp_path / "pred.csv.rejects.csv").read_text()
    assert "unknown category 'sometimes'" in rejects and "'abc' is not a finite number" in rejects
    assert "2 fields, expected 3" in rejects


def test_a_regression_risk_model_on_diabetes_keeps_the_target_unit(tmp_path: Path) -> None:
    result, summary = train_risk(overrides=[f"output_dir={tmp_path}", *FAST, "data.shipped=diabetes"])
    risk = RiskModel.load(result.run_dir)
    assert risk.kind == "regression"
    _, rows, _, _ = shipped_table("diabetes")
    predictions = risk.predict(rows[:20])
    assert 25 < float(np.mean(predictions)) < 346  # disease progression units, not standardised
    assert set(summary.scores["test"]) == {"tujie mlp", "ridge", "gradient boosting"}
    assert risk.plain().describe().endswith("rescale to the target's unit → value")


def test_cli_trains_predicts_explains_and_exits_2_on_bad_input(tujie, tmp_path: Path) -> None:
    done = tujie("health", "risk", "train", "--epochs", "3", "-s", f"output_dir={tmp_path}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_dir = next((tmp_path / "breast-cancer-risk").iterdir())
    header, rows, _, _ = shipped_table("breast_cancer")
    table = _write(tmp_path / "p.csv", header, [[r[h] for h in header] for r in rows[:5]])
    done = tujie("health", "risk", "predict", str(run_dir), str(table), str(tmp_path / "o.csv"), cwd=tmp_path)
    assert done.returncode == 0 and "predicted 5 patient(s)" in done.stdout
    done = tujie("health", "risk", "evaluate", str(run_dir), str(table), cwd=tmp_path)
    assert done.returncode == 0 and "roc_auc" in done.stdout
    png = tmp_path / "why.png"
    done = tujie(
        "health", "risk", "explain", str(run_dir), str(table), "--row", "3", "--output", str(png), cwd=tmp_path
    )
    assert done.returncode == 0 and png.stat().st_size > 1000 and "logit of malignant" in done.stdout
    done = tujie("health", "risk", "explain", str(run_dir), str(table), "--row", "99", cwd=tmp_path)
    assert done.returncode == 2 and "rows 2..6" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    missing = _write(tmp_path / "m.csv", ["outcome", "x"], [["ab"[i % 2], "" if i == 7 else i] for i in range(20)])
    done = tujie("health", "risk", "train", "--data", str(missing), "--target", "outcome", cwd=tmp_path)
    assert done.returncode == 2 and "column 'x': missing value" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = tujie("health", "risk", "train", "--calibration", "platt", cwd=tmp_path)
    assert done.returncode == 2 and "platt" in done.stderr
