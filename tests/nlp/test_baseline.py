"""The TF-IDF + logistic-regression baseline beside every fine-tune: fit, choose C on validation, save without
pickle, load, predict identically; baseline-only runs and prediction through the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tujie_core import DataError
from tujie_nlp.baseline import C_GRID, TextBaseline
from tujie_nlp.data import LabelVocab, read_texts
from tujie_nlp.run import bundled_data, load_tables, load_text_config


@pytest.fixture(scope="module")
def tickets():
    tables = load_tables(load_text_config(None).data)
    return tables, LabelVocab.from_labels(tables["train"].labels)


def test_baseline_fits_chooses_c_on_validation_and_beats_chance(tickets) -> None:
    tables, labels = tickets
    baseline = TextBaseline.fit(tables["train"], tables["val"], labels)
    assert baseline.info["C"] in C_GRID and baseline.info["chosen_by"] == "validation accuracy"
    scores = baseline.scores(tables["val"])
    assert scores["accuracy"] > 2 / len(labels) and 0 < scores["f1_macro"] <= 1
    no_val = TextBaseline.fit(tables["train"], None, labels)
    assert no_val.info["C"] == 1.0 and "no validation" in no_val.info["chosen_by"]


def test_baseline_saves_without_pickle_and_loads_to_identical_predictions(tickets, tmp_path: Path) -> None:
    tables, labels = tickets
    baseline = TextBaseline.fit(tables["train"], tables["val"], labels)
    folder = baseline.save(tmp_path / "baseline")
    assert sorted(p.name for p in folder.iterdir()) == ["baseline.json", "baseline.safetensors"]
    assert json.loads((folder / "baseline.json").read_text())["labels"] == labels.names
    loaded = TextBaseline.load(folder)
    texts = tables["val"].texts
    np.testing.assert_array_equal(loaded.decision_function(texts), baseline.decision_function(texts))
    assert loaded.predict(texts) == baseline.predict(texts)
    with pytest.raises(DataError, match="no baseline"):
        TextBaseline.load(tmp_path)


def test_multi_label_baseline_predicts_label_sets(tmp_path: Path) -> None:
    rows = [("refund my card and fix login", "billing|account"), ("card charged twice", "billing")] * 10
    rows += [("cannot log in", "account"), ("password reset fails", "account")] * 10
    path = tmp_path / "multi.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([("text", "label"), *rows])
    table = read_texts(path, label_column="label", multi_label=True, label_separator="|")
    labels = LabelVocab.from_labels(table.labels, multi_label=True)
    baseline = TextBaseline.fit(table, table, labels)
    assert baseline.predict(["card charged twice"]) == [["billing"]]
    assert baseline.probabilities(["cannot log in"]).shape == (1, 2)


def test_baseline_only_run_and_prediction_from_the_cli(tujie, tmp_path: Path) -> None:
    done = tujie("nlp", "train", "--baseline-only", "--set", f"output_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "baseline metrics" in done.stdout and "val/accuracy" in done.stdout
    run = next((tmp_path / "runs").glob("*/*"))
    assert (run / "baseline" / "baseline.json").is_file() and not (run / "model").exists()
    assert "## Classical baseline" in (run / "report.md").read_text()
    done = tujie("nlp", "predict", str(run), str(bundled_data()), "out.csv", "--baseline", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with (tmp_path / "out.csv").open() as handle:
        predicted = list(csv.DictReader(handle))
    table = read_texts(bundled_data())
    assert [r["label"] for r in predicted] == [ls[0] for ls in TextBaseline.load(run / "baseline").predict(table.texts)]
    done = tujie("nlp", "predict", str(tmp_path), str(bundled_data()), "x.csv", "--baseline", cwd=tmp_path)
    assert done.returncode == 2 and "no baseline" in done.stderr
