"""The molecules part of ``tujie demo`` (quick): FreeSolv training beside its baseline, the ChEMBL drugs screened."""

from __future__ import annotations

import csv
from pathlib import Path

from tujie_health.demo import molecules_demo


def test_quick_molecules_demo(tmp_path: Path) -> None:
    result = molecules_demo(tmp_path, quick=True)
    assert result.metrics["screen molecules ranked"] + result.metrics["screen molecules rejected"] == 2628
    assert result.metrics["freesolv test/rmse"] > 0 and result.metrics["freesolv test/rmse fingerprint RF"] > 0
    with (result.run_dir / "chembl_ranked.csv").open(newline="") as handle:
        scores = [float(r["score"]) for r in csv.DictReader(handle)]
    assert scores == sorted(scores)  # most soluble (lowest free energy) first
    assert (result.run_dir / "top_hits.png").read_bytes().startswith(b"\x89PNG")
    from tujie_health.molecules.predictor import MoleculeModel

    predicted = MoleculeModel.load(result.run_dir).predict(["CCO", "c1ccccc1O"])
    assert predicted.std is not None and (predicted.std > 0).all()  # an ensemble: its spread is the uncertainty
