"""Molecules: featurisation of known molecules, tables with invalid and missing rows, scaffold splits, the three GNNs
overfitting 16 molecules, ensembles with uncertainty, screening (sorted, complete, identical after resume and on a
local Dask cluster) and bad input on the CLI."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tujie_core import DataError

FREESOLV_HEAD = [
    ("CN(C)C(=O)c1ccc(cc1)OC", -11.01),
    ("CS(=O)(=O)Cl", -4.87),
    ("CC(C)C=C", 1.83),
    ("CCc1cnccn1", -5.45),
    ("CCCCCCCO", -4.21),
    ("Cc1cc(cc(c1)O)C", -6.27),
    ("CC(C)C(C)C", 2.34),
    ("CCCC(C)(C)O", -3.92),
    ("C1CCC(CC1)N", -4.59),
    ("c1ccc2c(c1)ccc3c2cccc3", -3.88),
    ("CC(=O)OC1=CC=CC=C1C(=O)O", -9.94),
    ("ClC(Cl)Cl", -1.08),
    ("c1ccccc1", -0.87),
    ("CCO", -5.0),
    ("OC1CCCCC1", -5.48),
    ("CC(=O)N", -9.71),
    ("Cn1cnc2c1c(=O)n(C)c(=O)n2C", -12.64),
    ("CCOC(=O)C", -2.94),
    ("c1ccc(cc1)Cl", -0.78),
    ("CCN(CC)CC", -3.22),
]


def write_csv(path: Path, rows: list[tuple], header: tuple = ("smiles", "expt")) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


# ---- featurisation -------------------------------------------------------------------------------------------------
def test_known_molecules_have_the_right_atoms_bonds_and_features() -> None:
    from tujie_health.molecules.featurize import ATOM_FEATURES, BOND_FEATURES, atom_feature_dim, featurize

    caffeine = featurize("Cn1cnc2c1c(=O)n(C)c(=O)n2C")
    assert caffeine.atoms.shape == (14, len(ATOM_FEATURES)) and caffeine.edge_index.shape == (2, 30)
    assert caffeine.bonds.shape == (30, len(BOND_FEATURES))
    assert atom_feature_dim() == 101 + 7 + 6 + 5 + 6 + 8 + 2 + 2
    benzene = featurize("c1ccccc1")
    assert (benzene.atoms[:, 0] == 6).all() and (benzene.atoms[:, 6] == 1).all() and (benzene.atoms[:, 7] == 1).all()
    assert (benzene.atoms[:, 4] == 1).all() and (benzene.atoms[:, 5] == 2).all()  # one H each, sp2
    assert (benzene.bonds[:, 0] == 3).all()  # aromatic bonds
    ammonium = featurize("[NH4+]")
    assert ammonium.atoms[0, 2] == 3 and ammonium.atoms[0, 4] == 4  # charge +1 → code 3; four hydrogens
    ethanol = featurize("OCC")
    assert ethanol.smiles == "CCO" and list(ethanol.atoms[:, 0]) == [8, 6, 6]
    src, dst = ethanol.edge_index
    assert list(src[1::2]) == list(dst[0::2]) and list(dst[1::2]) == list(src[0::2])  # reverse pairs
    data = ethanol.to_data([1.5])
    assert data.x.shape == (3, 8) and data.y.shape == (1, 1)


@pytest.mark.parametrize(
    ("smiles", "reason"),
    [("C1CC", "invalid SMILES 'C1CC'"), ("C(C)(C)(C)(C)C", "valence"), ("", "empty SMILES"), ("xyz", "cannot parse")],
)
def test_invalid_smiles_raise_with_the_reason(smiles: str, reason: str) -> None:
    from tujie_health.molecules.featurize import featurize

    with pytest.raises(DataError, match=reason):
        featurize(smiles)


def test_standardisation_strips_salts_and_neutralises() -> None:
    from tujie_health.molecules.featurize import featurize

    assert featurize("CC(=O)[O-].[Na+]", standardized=True).smiles == "CC(=O)O"


# ---- tables and splits ---------------------------------------------------------------------------------------------
def test_a_table_skips_invalid_rows_masks_missing_targets_and_saves_the_split(tmp_path: Path) -> None:
    from tujie_health.molecules.data import molecules

    rows = [(s, v, v + 1) for s, v in FREESOLV_HEAD]
    rows[3] = ("C1CC", 1.0, 2.0)  # file line 5: invalid
    rows[5] = (rows[5][0], "", 3.0)  # one target missing
    rows[7] = (rows[7][0], "", "")  # no target at all: left out
    path = write_csv(tmp_path / "assay.csv", rows, ("SMILES", "a", "b"))
    with pytest.warns(UserWarning, match=r"skipped 1 invalid SMILES \(row 5: invalid SMILES 'C1CC'"):
        splits = molecules(path=path, targets=["a", "b"], val_fraction=0.2, test_fraction=0.2)
    info = splits.info
    assert info.kind == "regression" and info.num_outputs == 2
    meta = info.metadata["molecules"]
    assert meta["dropped_rows"]["invalid"][0]["row"] == 5 and meta["dropped_rows"]["no_target"] == [9]
    split_rows = meta["split"]["rows"]
    assert sorted(split_rows["train"] + split_rows["val"] + split_rows["test"]) == [
        r for r in range(2, 22) if r not in (5, 9)
    ]
    everything = np.concatenate([p.targets for p in (splits.train, splits.val, splits.test)])
    assert np.isnan(everything).sum() == 1
    with pytest.raises(DataError, match="row 5: invalid SMILES"):
        molecules(path=path, targets=["a", "b"], invalid="refuse")


def test_table_errors_name_the_file_and_column(tmp_path: Path) -> None:
    from tujie_health.molecules.data import molecules

    with pytest.raises(DataError, match="no SMILES column"):
        molecules(path=write_csv(tmp_path / "x.csv", [("CCO", 1)], ("structure_id", "y")))
    with pytest.raises(DataError, match="name the target column"):
        molecules(path=write_csv(tmp_path / "two.csv", [("CCO", 1, 2)] * 4, ("smiles", "a", "b")))
    with pytest.raises(DataError, match=r"row 3, column 'expt': 'high' is not a number"):
        molecules(path=write_csv(tmp_path / "bad.csv", [("CCO", 1), ("CC", "high")]))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty file"):
        molecules(path=tmp_path / "empty.csv")


def test_binary_labels_are_detected_and_stratified_splits_keep_proportions(tmp_path: Path) -> None:
    from tujie_health.molecules.data import molecules

    rows = [(s, i % 4 == 0) for i, (s, _) in enumerate(FREESOLV_HEAD * 2)]
    path = write_csv(tmp_path / "act.csv", [(s, int(a)) for s, a in rows], ("smiles", "active"))
    splits = molecules(path=path, split="stratified", val_fraction=0.2, test_fraction=0.2, seed=3)
    assert splits.info.kind == "binary"
    for part in (splits.train, splits.val, splits.test):
        assert part.targets.mean() == pytest.approx(0.25, abs=0.02)


def test_scaffold_split_keeps_scaffolds_disjoint() -> None:
    from tujie_health.molecules.data import molecules, scaffold

    splits = molecules(split="scaffold", seed=1)  # shipped FreeSolv
    groups = [{scaffold(s) for s in part.smiles} for part in (splits.train, splits.val, splits.test)]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert len(splits.test) == pytest.approx(64, abs=8)
    again = molecules(split="scaffold", seed=1)
    assert again.test.rows == splits.test.rows  # fixed by the seed


# ---- models --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dmpnn", "gin", "attentivefp"])
def test_each_model_overfits_16_molecules(name: str, tmp_path: Path) -> None:
    import torch
    from torch.utils.data import DataLoader

    from tujie_core import RegressionTask, Trainer, create_model
    from tujie_health.molecules.data import molecules

    splits = molecules(path=write_csv(tmp_path / "tiny.csv", FREESOLV_HEAD[:16]), val_fraction=0, test_fraction=0)
    torch.manual_seed(0)
    model = create_model(name, input_shape=(8,), num_outputs=1, hidden=64, ffn_hidden=64, **splits.info.model_args)
    task = RegressionTask(model, optimizer={"name": "adamw", "lr": 0.003})
    loader = DataLoader(splits.train, batch_size=16, shuffle=True, collate_fn=splits.batcher)
    Trainer(accelerator="cpu", max_epochs=200, progress="none", run_dir=tmp_path).fit(task, loader)
    model.eval()
    batch = next(iter(loader))
    with torch.no_grad():
        predicted, truth = model(batch).squeeze(-1), batch.y.squeeze(-1)
    assert len(truth) == 16
    assert torch.sqrt(torch.mean((predicted - truth) ** 2)) < 0.1 * truth.std()


def test_quantile_scaling_maps_each_column_through_its_training_cdf() -> None:
    import torch

    from tujie_health.molecules.models import QuantileScale

    scale = QuantileScale([[0.0, 1.0, 2.0, 10.0, 1000.0], [5.0, 5.0, 5.0, 5.0, 5.0]])
    x = torch.tensor([[-3.0, 5.0], [0.0, 4.0], [1.5, 6.0], [10.0, float("nan")], [500.0, 5.0], [1e9, 5.0]])
    out = scale(x)
    level = torch.tensor([-3.0, 0.0, 1.5, 3.0, 3 + 490 / 990, 4.0]).clamp_min(0) / 4  # 10 is level 3, 500 on the way up
    assert torch.allclose(out[:, 0], 2 * level - 1)
    assert out[:, 1].tolist() == [0.0, -1.0, 1.0, 0.0, 0.0, 0.0]  # constant column: its value the mid-rank, NaN 0
    assert out.abs().max() <= 1


def test_molecule_descriptors_train_predict_and_screen(tmp_path: Path) -> None:
    from tujie_health.molecules.data import molecules
    from tujie_health.molecules.featurize import descriptor_names, featurize_mols, parse_smiles
    from tujie_health.molecules.predictor import MoleculeModel
    from tujie_health.molecules.screen import screen
    from tujie_health.molecules.training import train_molecules

    (graph,) = featurize_mols([parse_smiles("CCO")], "rdkit2d")
    names = descriptor_names()
    assert graph.features.shape == (len(names),) and graph.features[names.index("HeavyAtomCount")] == 3
    path = write_csv(tmp_path / "train.csv", FREESOLV_HEAD)
    splits = molecules(path=path, mol_features="rdkit2d")
    args = splits.info.model_args
    assert args["mol_features"] == len(names) and np.array(args["feature_quantiles"]).shape == (len(names), 21)
    assert splits.info.metadata["molecules"]["featurizer"]["descriptors"] == names
    overrides = [f"output_dir={tmp_path}", f"data.path={path}", "data.mol_features=rdkit2d", "trainer.max_epochs=3"]
    folder = train_molecules(overrides=[*overrides, "trainer.progress=none", "model.hidden=16"], baseline=False).folder
    model = MoleculeModel.load(folder)
    assert model.mol_features == "rdkit2d"
    predicted = model.predict(["CCO", "c1ccccc1O"])
    assert np.isfinite(predicted.values).all() and not np.allclose(predicted.values[0], predicted.values[1])
    assert model.atom_attributions("c1ccccc1O").shape == (7,)
    library = tmp_path / "lib.smi"
    library.write_text("CCO a\nC1CC bad\nc1ccccc1O b\n")
    ranked = screen(folder, library, tmp_path / "hits.csv", backend="threads", progress="none")
    assert (ranked.rows, ranked.rejected) == (3, 1)
    scores = {row[4]: float(row[2]) for row in read(tmp_path / "hits.csv")[1:]}
    assert scores == pytest.approx({"CCO": predicted.values[0, 0], "Oc1ccccc1": predicted.values[1, 0]}, rel=1e-5)
    config = folder / "model" / "config.json"
    saved = json.loads(config.read_text())
    saved["molecules"]["featurizer"]["descriptors"] = names[:-1]  # as another RDKit version would list them
    config.write_text(json.dumps(saved))
    with pytest.raises(DataError, match="another RDKit's descriptor list"):
        MoleculeModel.load(folder)


def test_atom_attributions_cover_every_atom_and_draw(tmp_path: Path, trained: Path) -> None:
    from tujie_health.molecules.draw import draw_molecule
    from tujie_health.molecules.predictor import MoleculeModel

    model = MoleculeModel.load(trained)
    weights = model.atom_attributions("CC(=O)Oc1ccccc1C(=O)O")
    assert weights.shape == (13,) and np.isfinite(weights).all() and np.abs(weights).sum() > 0
    assert draw_molecule("CC(=O)Oc1ccccc1C(=O)O", atom_weights=weights).startswith(b"\x89PNG")


# ---- ensembles and screening -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-seed ensemble of small D-MPNNs on 20 FreeSolv molecules."""
    from tujie_health.molecules.training import train_molecules

    out = tmp_path_factory.mktemp("mol")
    path = write_csv(out / "train.csv", FREESOLV_HEAD)
    overrides = [f"output_dir={out}", f"data.path={path}", "trainer.max_epochs=5", "trainer.progress=none"]
    overrides += ["model.hidden=32", "model.ffn_hidden=32"]
    return train_molecules(overrides=overrides, seeds=2).folder


def test_an_ensemble_gives_an_uncertainty_and_a_baseline_in_its_report(trained: Path) -> None:
    from tujie_health.molecules.predictor import MoleculeModel

    model = MoleculeModel.load(trained)
    assert len(model.members) == 2
    predicted = model.predict(["CCO", "bad(", "c1ccccc1O"])
    assert predicted.index == [0, 2] and predicted.rejected[0][:2] == (1, "bad(")
    assert predicted.std is not None and (predicted.std > 0).all()
    report = (trained / "report.md").read_text()
    assert "## Baselines" in report and "fingerprint RF" in report and "ensemble" in report


def library(path: Path, copies: int = 6) -> tuple[Path, int, set[int]]:
    """A .smi library with invalid lines; returns (path, rows, invalid lines)."""
    lines, bad = [], set()
    for k in range(copies):
        for i, (s, _) in enumerate(FREESOLV_HEAD):
            if (k * 20 + i) % 17 == 5:
                s = "C1CC" if i % 2 else "N(=O)(=O)(=O)C"
                bad.add(len(lines) + 1)
            lines.append(f"{s} mol{k}_{i}")
    path.write_text("\n".join(lines) + "\n")
    return path, len(lines), bad


def test_screening_is_sorted_complete_and_lists_rejects(tmp_path: Path, trained: Path) -> None:
    from tujie_health.molecules.screen import screen

    lib, n, bad = library(tmp_path / "lib.smi")
    summary = screen(trained, lib, tmp_path / "hits.csv", chunk_size=16, workers=2, progress="none")
    ranked = read(summary.output)
    assert ranked[0] == ["rank", "row", "score", "uncertainty", "smiles"]
    rejects = read(summary.rejects)
    assert rejects[0] == ["row", "smiles", "reason"]
    assert {int(r[0]) for r in rejects[1:]} == bad and all("invalid SMILES" in r[2] for r in rejects[1:])
    good = {int(r[1]) for r in ranked[1:]}
    assert len(ranked) - 1 + len(rejects) - 1 == n and good | bad == set(range(1, n + 1))
    scores = [float(r[2]) for r in ranked[1:]]
    assert scores == sorted(scores, reverse=True) and [int(r[0]) for r in ranked[1:]] == list(range(1, len(good) + 1))
    assert all(float(r[3]) >= 0 for r in ranked[1:])
    ascending = screen(trained, lib, tmp_path / "low.csv", ascending=True, backend="threads", progress="none")
    assert [float(r[2]) for r in read(ascending.output)[1:]] == sorted(scores)


def test_an_interrupted_screen_resumes_to_identical_output(tmp_path: Path, trained: Path, monkeypatch) -> None:
    from tujie_health.molecules import screen as screening

    lib, _, _ = library(tmp_path / "lib.smi")
    reference = screening.screen(trained, lib, tmp_path / "ref.csv", chunk_size=8, backend="threads", progress="none")
    calls = {"n": 0}
    original = screening.Scorer.__call__

    def crashing(self, graphs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return original(self, graphs)

    monkeypatch.setattr(screening.Scorer, "__call__", crashing)
    with pytest.raises(KeyboardInterrupt):
        screening.screen(trained, lib, tmp_path / "hits.csv", chunk_size=8, backend="threads", progress="none")
    monkeypatch.setattr(screening.Scorer, "__call__", original)
    resumed = screening.screen(trained, lib, tmp_path / "hits.csv", chunk_size=8, backend="threads", progress="none")
    assert resumed.resumed_from == 40
    assert (tmp_path / "hits.csv").read_bytes() == reference.output.read_bytes()
    assert (tmp_path / "hits.csv.rejects.csv").read_bytes() == reference.rejects.read_bytes()
    assert not list(tmp_path.glob("hits.csv.work*"))


def test_a_screen_on_a_local_dask_cluster_matches_the_single_machine_run(tmp_path: Path, trained: Path) -> None:
    from tujie_core.inference import DaskBackend
    from tujie_health.molecules.screen import screen

    lib, _, _ = library(tmp_path / "lib.smi")
    single = screen(trained, lib, tmp_path / "one.csv", chunk_size=16, backend="threads", progress="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spread = screen(
            trained, lib, tmp_path / "dask.csv", chunk_size=16, backend=DaskBackend(workers=2), progress="none"
        )
    assert spread.output.read_bytes() == single.output.read_bytes()
    assert spread.rejects.read_bytes() == single.rejects.read_bytes()
    forked = screen(trained, lib, tmp_path / "forked.csv", chunk_size=16, workers=2, progress="none")  # processes
    assert forked.output.read_bytes() == single.output.read_bytes()
    assert forked.rejects.read_bytes() == single.rejects.read_bytes()


def test_ranking_merges_sorted_runs_from_disk(tmp_path: Path) -> None:
    from tujie_health.molecules.screen import rank_file

    rng = np.random.default_rng(0)
    work = tmp_path / "work.csv"
    values = rng.integers(0, 50, 300) / 10  # many ties: broken by row
    write_csv(work, [(i, v, "C") for i, v in enumerate(values, 2)], ("row", "score", "smiles"))
    assert rank_file(work, tmp_path / "out.csv", run_rows=7) == 300
    rows = read(tmp_path / "out.csv")[1:]
    keys = [(-float(r[2]), int(r[1])) for r in rows]
    assert keys == sorted(keys) and not list(tmp_path.glob("out.csv.run*"))


def test_evaluating_a_binary_model_reports_enrichment(tmp_path: Path) -> None:
    from tujie_health.molecules.predictor import MoleculeModel
    from tujie_health.molecules.training import evaluate_file, train_molecules

    rows = [(s, int(v < -4)) for s, v in FREESOLV_HEAD]
    path = write_csv(tmp_path / "act.csv", rows, ("smiles", "active"))
    overrides = [f"output_dir={tmp_path}", f"data.path={path}", "trainer.max_epochs=3", "trainer.progress=none"]
    overrides += ["model.hidden=16", "model.ffn_hidden=16", "trainer.monitor=val/loss"]
    result = train_molecules(overrides=overrides)
    metrics = evaluate_file(MoleculeModel.load(result.folder), path)
    assert {"roc_auc", "pr_auc", "ef_1%", "ef_5%", "bedroc"} <= set(metrics) and metrics["molecules"] == 20


# ---- CLI -----------------------------------------------------------------------------------------------------------
def test_cli_trains_evaluates_and_screens(tujie, tmp_path: Path, trained: Path) -> None:
    data = write_csv(tmp_path / "train.csv", FREESOLV_HEAD)
    done = tujie(
        "health", "mol-train", "--data", str(data), "--epochs", "2", "-s", "model.hidden=16", "-s",
        "model.ffn_hidden=16", "-s", f"output_dir={tmp_path}", "-s", "trainer.progress=none", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "fingerprint RF" in done.stdout and "rmse" in done.stdout
    done = tujie("health", "mol-evaluate", str(trained), str(data), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "rmse" in done.stdout
    lib, _, _ = library(tmp_path / "lib.smi", copies=2)
    done = tujie(
        "health", "screen", "--model", str(trained), "--library", str(lib), "--output", "hits.csv", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "molecules/s" in done.stdout and "skipped" in done.stderr and (tmp_path / "hits.csv").is_file()


def test_cli_bad_inputs_exit_2_with_one_line(tujie, tmp_path: Path, trained: Path) -> None:
    from tujie_core import create_model, save_pretrained

    no_smiles = write_csv(tmp_path / "x.csv", [("CCO", 1.0)] * 5, ("name", "y"))
    (tmp_path / "empty.smi").write_text("")
    spec = {"name": "linear", "input_shape": [3], "num_outputs": 1}
    other = save_pretrained(tmp_path / "risk", create_model(**spec), spec, kind="regression")
    cases = [
        (("health", "mol-train", "--data", str(no_smiles)), "no SMILES column"),
        (("health", "screen", "--model", str(trained), "--library", str(tmp_path / "empty.smi")), "empty file"),
        (("health", "screen", "--model", str(other), "--library", str(no_smiles)), "not a molecule model"),
        (("health", "mol-evaluate", str(trained), str(no_smiles)), "no SMILES column"),
    ]
    for args, message in cases:
        done = tujie(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, done.stderr)


def test_a_molecule_run_resumes_exactly(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tujie_core import load_config, train_from_config
    from tujie_health.cli import bundled_config

    path = write_csv(tmp_path / "train.csv", FREESOLV_HEAD)
    base = [f"data.path={path}", "model.hidden=16", "model.ffn_hidden=16", "trainer.progress=none"]

    def run(name: str, epochs: int, resume: Path | None = None) -> Path:
        config = load_config(
            bundled_config("freesolv_dmpnn"), [*base, f"output_dir={tmp_path / name}", f"trainer.max_epochs={epochs}"]
        )
        return train_from_config(config, resume=resume).run_dir

    straight = run("straight", 4)
    halted = run("halted", 2)
    resumed = run("halted", 4, resume=halted)
    assert resumed == halted
    a, b = (load_file(str(d / "model" / "model.safetensors")) for d in (straight, resumed))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_tuning_searches_a_molecule_model(tmp_path: Path) -> None:
    from tujie_core import load_config
    from tujie_core.tune import tune
    from tujie_health.cli import bundled_config

    path = write_csv(tmp_path / "train.csv", FREESOLV_HEAD)
    overrides = [f"data.path={path}", f"output_dir={tmp_path}", "trainer.max_epochs=2", "trainer.progress=none"]
    overrides += ["model.ffn_hidden=16", "tune={space: {model.hidden: {type: categorical, choices: [8, 16]}}}"]
    result = tune(load_config(bundled_config("freesolv_dmpnn"), overrides), trials=2)
    assert result.best_params["model.hidden"] in (8, 16) and result.best_value > 0
