"""The app's Molecules page (apps/views/molecules.py) with AppTest: predictions with uncertainty, rejects
listed, attribution pictures and a screen of the shipped ChEMBL drugs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

TIMEOUT = 180


def test_without_models_the_page_says_how_to_train_one(tmp_path: Path, open_page) -> None:
    page = open_page("molecules", timeout=TIMEOUT)
    assert not page.exception
    assert "tujie health mol-train" in " ".join(i.value for i in page.info)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    from tujie_health.molecules.training import train_molecules

    root = tmp_path_factory.mktemp("mol-runs")
    data = root / "train.csv"
    with data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["smiles", "expt"])
        smiles = ["CCO", "CCCO", "CCCCO", "c1ccccc1", "c1ccccc1O", "CC(=O)O", "CCN", "CCCl", "ClC(Cl)Cl", "CC(C)O"]
        writer.writerows((s, -i * 0.7) for i, s in enumerate(smiles))
    overrides = [f"output_dir={root}", f"data.path={data}", "trainer.max_epochs=2", "trainer.progress=none"]
    train_molecules(overrides=[*overrides, "model.hidden=16", "model.ffn_hidden=16"], seeds=2)
    return root


def test_the_page_predicts_lists_rejects_draws_and_screens(runs: Path, open_page) -> None:
    page = open_page("molecules", runs, timeout=TIMEOUT)
    assert not page.exception
    predictions, rejects = page.dataframe[0].value, page.dataframe[1].value
    assert len(predictions) == 4 and "expt ± (ensemble std)" in predictions.columns
    assert (predictions["expt ± (ensemble std)"] >= 0).all()
    assert list(rejects["SMILES"]) == ["C1CC"] and "invalid SMILES" in rejects["reason"][0]
    assert any("attribution" in img.caption for element in page.image for img in element.proto.imgs)
    page.text_area[0].set_value("CCO\nnot-a-molecule").run()
    assert len(page.dataframe[0].value) == 1 and len(page.dataframe[1].value) == 1
    next(b for b in page.button if b.label == "Screen the shipped library").click().run()
    assert not page.exception
    top = page.dataframe[-1].value
    assert len(top) == 10 and list(top["rank"].astype(int)) == list(range(1, 11)) and "name" in top.columns
