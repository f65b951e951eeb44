"""``tujie health``: medical image segmentation and classification, clinical risk models, synthetic volumes.

Registered through the ``tujie.cli`` entry point; user errors print one line and exit 2 (core's ``main``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import typer
from rich.console import Console

from tujie_core.cli import DP_OPTION, metrics_table, plugin_flags

app = typer.Typer(help="Health: medical imaging on MONAI and clinical risk models.", no_args_is_help=True)
segment = typer.Typer(help="Train, evaluate and apply segmentation networks (2D/3D).", no_args_is_help=True)
app.add_typer(segment, name="segment")
classify = typer.Typer(help="Train, evaluate, apply and explain 2D medical image classifiers.", no_args_is_help=True)
app.add_typer(classify, name="classify-images")
risk = typer.Typer(help="Train, evaluate, apply and explain clinical risk models on tables.", no_args_is_help=True)
app.add_typer(risk, name="risk")
console = Console()
err_console = Console(stderr=True)


def bundled_config(name: str = "synthetic_unet") -> Path:
    """A run config shipped inside tujie_health (``configs/<name>.yaml``)."""
    return Path(str(resources.files("tujie_health") / "configs" / f"{name}.yaml"))


def _print_metrics(title: str, metrics: dict[str, float]) -> None:
    console.print(metrics_table(title, [(k, f"{v:.4f}") for k, v in metrics.items()], ("metric", "value")))


@segment.command("train")
def segment_train(
    config: Path | None = typer.Argument(None, help="run config (YAML); default: a 3D UNet on synthetic volumes"),
    data: Path | None = typer.Option(None, help="dataset.json, a folder of images/ + labels/, or an image,label CSV"),
    model: str | None = typer.Option(None, help="monai/<Network>: monai/UNet, monai/SegResNet, monai/UNETR…"),
    patch: str | None = typer.Option(None, help="training patch size, e.g. 96,96,96 (data.patch_size)"),
    epochs: int | None = typer.Option(None, help="trainer.max_epochs"),
    resume: Path | None = typer.Option(None, help="a run folder to continue"),
    overrides: list[str] = typer.Option([], "--set", "-s", help="override a config key: data.spacing=[1.5,1.5,2]"),
    dp: str | None = DP_OPTION,
) -> None:
    """Train a segmentation network and write a run folder (checkpoints, model/, report.md)."""
    from tujie_core import load_config, train_from_config

    if config is None:
        config = resume / "config.yaml" if resume is not None and (resume / "config.yaml").is_file() else None
    extra = []
    if data is not None:  # a real source replaces the synthetic one
        extra += [f"data.source={data}", "data.synthetic=null"]
    if patch is not None:
        extra.append(f"data.patch_size=[{patch}]")
    if epochs is not None:
        extra.append(f"trainer.max_epochs={epochs}")
    if model is not None:  # a new model section: the config's options belong to its own model
        extra.insert(0, f"model={{name: '{model}'}}")
    raw = load_config(config or bundled_config(), [*extra, *overrides], plugin_flags(dp))
    result = train_from_config(raw, resume=resume)
    _print_metrics("metrics (best checkpoint)", result.metrics)
    console.print(f"run folder: {result.run_dir}\nmodel: {result.run_dir / 'model'}\nreport: {result.report}")


@segment.command("evaluate")
def segment_evaluate(
    run: Path = typer.Argument(..., help="a segmentation run folder"),
    data: Path = typer.Argument(..., help="labelled volumes: dataset.json, images/ + labels/, or an image,label CSV"),
    output_dir: Path | None = typer.Option(None, help="write metrics.json here"),
) -> None:
    """Dice, HD95 and loss of a trained network on every labelled volume, whole, in sliding windows."""
    from tujie_health.imaging import Segmenter

    _print_metrics(str(data), Segmenter.load(run).evaluate(data, output_dir).metrics)


@segment.command("predict")
def segment_predict(
    run: Path = typer.Argument(..., help="a segmentation run folder"),
    inputs: Path = typer.Argument(..., help="a folder of scans (files, DICOM series folders), a .txt list, or one"),
    output_dir: Path = typer.Argument(..., help="masks (<name>_seg.nii.gz) and segmentations.csv go here"),
    workers: int | None = typer.Option(None, min=1, help="reading threads (default: one per core)"),
    restart: bool = typer.Option(False, "--restart", help="start over instead of resuming an interrupted run"),
) -> None:
    """Segment every scan, streaming; unreadable scans go to segmentations.csv.rejects.csv with the reason, and a
    rerun after an interruption resumes where it stopped."""
    from tujie_health.imaging import Segmenter

    summary = Segmenter.load(run).predict_files(
        inputs, output_dir, workers=workers, resume=not restart, progress="auto"
    )
    if summary.rejected:
        err_console.print(f"warning: {inputs}: skipped {summary.rejected} bad scan(s)", markup=False)
        for row in summary.examples[:10]:
            err_console.print(f"  {row}", markup=False)
        err_console.print(f"  all of them → {summary.rejects}", markup=False)
    resumed = f" (resumed after {summary.resumed_from})" if summary.resumed_from else ""
    console.print(f"segmented {summary.predicted} scan(s) → {summary.output}{resumed}")


@segment.command("export")
def segment_export(
    run: Path = typer.Argument(..., help="a segmentation run folder"),
    folder: Path = typer.Argument(..., help="the MONAI Bundle folder to write"),
) -> None:
    """Export a run as a MONAI Bundle (configs/inference.json, configs/metadata.json, models/model.pt) that
    ``python -m monai.bundle run`` executes on a new scan."""
    from tujie_health.imaging.bundle import export_bundle

    bundle = export_bundle(run, folder)
    console.print(f"bundle: {bundle.folder}\nrun it: {bundle.command()}", markup=False)


@classify.command("train")
def classify_train(
    config: Path | None = typer.Argument(None, help="run config (YAML); default: a small CNN on synthetic lesions"),
    data: Path | None = typer.Option(None, help="a MedMNIST .npz (train/val/test images and labels)"),
    model: str | None = typer.Option(None, help="cnn | monai/DenseNet121 | any registry model"),
    epochs: int | None = typer.Option(None, help="trainer.max_epochs"),
    target_sensitivity: float | None = typer.Option(
        None, min=0.0, max=1.0, help="then choose the decision threshold for this recall on validation"
    ),
    resume: Path | None = typer.Option(None, help="a run folder to continue"),
    overrides: list[str] = typer.Option([], "--set", "-s", help="override a config key: data.image_size=64"),
    dp: str | None = DP_OPTION,
) -> None:
    """Train a medical image classifier (ROC-AUC, sensitivity, specificity, calibration in the report)."""
    from tujie_core import load_config, train_from_config
    from tujie_core.evaluate import tune_run_threshold

    if config is None:
        config = resume / "config.yaml" if resume is not None and (resume / "config.yaml").is_file() else None
    extra = [f"data.path={data}", "data.synthetic=null"] if data is not None else []
    if epochs is not None:
        extra.append(f"trainer.max_epochs={epochs}")
    if model is not None:
        extra.insert(0, f"model={{name: '{model}'}}")
    raw = load_config(config or bundled_config("lesions_cnn"), [*extra, *overrides], plugin_flags(dp))
    result = train_from_config(raw, resume=resume)
    metrics = result.metrics
    if target_sensitivity is not None:
        choice, metrics = tune_run_threshold(result.run_dir, "recall", target_sensitivity)
        console.print(
            f"threshold {choice.threshold:.4f} for sensitivity ≥ {target_sensitivity}: validation sensitivity "
            f"{choice.recall:.4f}, precision {choice.precision:.4f} (stored with the model)"
        )
    _print_metrics("metrics", metrics)
    console.print(f"run folder: {result.run_dir}\nreport: {result.report}")


@classify.command("evaluate")
def classify_evaluate(
    run: Path = typer.Argument(..., help="a classify-images run folder"),
    data: Path = typer.Argument(..., help="a MedMNIST .npz"),
    split: str = typer.Option("test", help="which split of the file: train, val or test"),
) -> None:
    """Metrics (ROC-AUC, sensitivity, specificity, ECE…) on a labelled split at the stored decision threshold."""
    from tujie_health.imaging.classifier import MedicalImageClassifier

    _print_metrics(f"{data} ({split})", MedicalImageClassifier.load(run).evaluate(data, split).metrics)


@classify.command("predict")
def classify_predict(
    run: Path = typer.Argument(..., help="a classify-images run folder"),
    data: Path = typer.Argument(..., help="a MedMNIST .npz"),
    output: Path = typer.Argument(..., help="CSV to write (index, label, p_<class>)"),
    split: str = typer.Option("test", help="which split of the file"),
    restart: bool = typer.Option(False, "--restart", help="start over instead of resuming"),
) -> None:
    """Probabilities for every image of a split, streaming; bad images go to OUTPUT.rejects.csv."""
    from tujie_health.imaging.classifier import MedicalImageClassifier

    summary = MedicalImageClassifier.load(run).predict_file(data, output, split=split, resume=not restart)
    if summary.rejected:
        err_console.print(f"warning: {data}: skipped {summary.rejected} bad image(s) → {summary.rejects}")
    console.print(f"predicted {summary.predicted} image(s) → {summary.output}")


@classify.command("explain")
def classify_explain(
    run: Path = typer.Argument(..., help="a classify-images run folder"),
    data: Path = typer.Argument(..., help="a MedMNIST .npz"),
    output: Path = typer.Argument(..., help="PNG to write"),
    index: int = typer.Option(0, min=0, help="which image of the split"),
    split: str = typer.Option("test", help="which split of the file"),
    method: str = typer.Option("gradcam", help="gradcam or occlusion"),
) -> None:
    """A saliency overlay for one image's predicted class."""
    from tujie_core import DataError
    from tujie_health.imaging.classifier import MedicalImageClassifier

    classifier = MedicalImageClassifier.load(run)
    images, _ = classifier.images(data, split)
    if index >= len(images):
        raise DataError(f"{data}: --index {index} but {split} has {len(images)} images")
    classifier.explain(images[index], method).save(output)  # type: ignore[arg-type]
    console.print(f"saliency ({method}) → {output}")


@app.command("make-volumes")
def make_volumes(
    output: Path = typer.Argument(..., help="folder to write imagesTr/, labelsTr/ and dataset.json into"),
    count: int = typer.Option(16, min=1, help="volumes"),
    size: int = typer.Option(64, min=16, help="edge length in voxels"),
    spatial_dims: int = typer.Option(3, min=2, max=3, help="2 (images) or 3 (volumes)"),
    classes: int = typer.Option(1, min=1, help="foreground classes"),
    seed: int = typer.Option(0),
) -> None:
    """Write synthetic volumes (spheres on a background) as a Decathlon-style NIfTI dataset."""
    from tujie_health.imaging.data import Synthetic, write_synthetic

    spec = Synthetic(count=count, size=size, spatial_dims=spatial_dims, classes=classes, seed=seed)
    folder = write_synthetic(output, spec)
    console.print(f"wrote {count} image/label pairs → {folder / 'dataset.json'}")


@risk.command("train")
def risk_train(
    config: Path | None = typer.Argument(None, help="run config (YAML); default: an MLP on the breast-cancer set"),
    data: Path | None = typer.Option(None, help="a CSV/TSV with one row per patient (default: shipped set)"),
    target: str | None = typer.Option(None, help="the outcome column of --data"),
    positive: str | None = typer.Option(None, help="binary: the class the model gives the risk of"),
    shipped: str | None = typer.Option(None, help="breast_cancer (classification) or diabetes (regression)"),
    impute: str | None = typer.Option(None, help="missing values: refuse (default), mean, median, most_frequent"),
    categorical: list[str] = typer.Option([], help="a column to one-hot (repeat; default: non-numeric columns)"),
    calibration: str = typer.Option("temperature", help="temperature, isotonic or none (fitted on validation)"),
    target_sensitivity: float | None = typer.Option(
        None, min=0.0, max=1.0, help="choose the decision threshold for this sensitivity on validation"
    ),
    epochs: int | None = typer.Option(None, help="trainer.max_epochs"),
    resume: Path | None = typer.Option(None, help="a run folder to continue"),
    overrides: list[str] = typer.Option([], "--set", "-s", help="override a config key: model.hidden=[64,32]"),
    dp: str | None = DP_OPTION,
) -> None:
    """Train a risk model, calibrate it, choose its threshold and compare it with logistic regression and gradient
    boosting on the same split (report.md)."""
    from tujie_core import ConfigError
    from tujie_health.clinical.risk import DEFAULT_CONFIG, train_risk

    if calibration not in ("temperature", "isotonic", "none"):
        raise ConfigError(f"--calibration: '{calibration}' is not one of temperature, isotonic, none")
    if config is None:
        config = resume / "config.yaml" if resume is not None and (resume / "config.yaml").is_file() else None
    extra = []
    if data is not None:
        extra.append(f"data.path={data}")
    for key, value in (("target", target), ("positive", positive), ("shipped", shipped), ("impute", impute)):
        if value is not None:
            extra.append(f"data.{key}={value}")
    if categorical:
        extra.append(f"data.categorical=[{','.join(categorical)}]")
    if epochs is not None:
        extra.append(f"trainer.max_epochs={epochs}")
    result, summary = train_risk(
        config or bundled_config(DEFAULT_CONFIG),
        [*extra, *overrides],
        calibration=calibration,  # type: ignore[arg-type]
        target_sensitivity=target_sensitivity,
        dp=dp,
        resume=resume,
    )
    split = "test" if "test" in summary.scores else "val"
    for name, row in summary.table(split):
        _print_metrics(f"{name} ({split})", row)
    console.print(f"run folder: {result.run_dir}\nmodel: {result.run_dir / 'model'}\nreport: {result.report}")


@risk.command("calibrate")
def risk_calibrate(
    run: Path = typer.Argument(..., help="a risk run folder (e.g. one trained with `tujie train`)"),
    calibration: str = typer.Option("temperature", help="temperature, isotonic or none"),
    target_sensitivity: float | None = typer.Option(None, min=0.0, max=1.0, help="threshold for this sensitivity"),
) -> None:
    """(Re)fit calibration, threshold and baselines of a finished risk run on its validation split."""
    from tujie_core import ConfigError
    from tujie_health.clinical.risk import finish_risk_run

    if calibration not in ("temperature", "isotonic", "none"):
        raise ConfigError(f"--calibration: '{calibration}' is not one of temperature, isotonic, none")
    summary = finish_risk_run(run, calibration, target_sensitivity)  # type: ignore[arg-type]
    split = "test" if "test" in summary.scores else "val"
    for name, row in summary.table(split):
        _print_metrics(f"{name} ({split})", row)


@risk.command("evaluate")
def risk_evaluate(
    run: Path = typer.Argument(..., help="a risk run or model folder"),
    data: Path = typer.Argument(..., help="a labelled CSV/TSV (the target column present)"),
) -> None:
    """ROC-AUC, sensitivity/specificity at the stored threshold, ECE and Brier (calibrated and not) on a table."""
    from tujie_health.clinical.risk import RiskModel

    _print_metrics(str(data), RiskModel.load(run).evaluate(data))


@risk.command("predict")
def risk_predict(
    run: Path = typer.Argument(..., help="a risk run or model folder"),
    data: Path = typer.Argument(..., help="a CSV/TSV of patients (the model's columns; the target may be absent)"),
    output: Path = typer.Argument(..., help="CSV to write (row, label, calibrated probability or prediction)"),
    restart: bool = typer.Option(False, "--restart", help="start over instead of resuming"),
) -> None:
    """Calibrated risk for every row, streaming; a bad row goes to OUTPUT.rejects.csv with the reason."""
    from tujie_health.clinical.risk import RiskModel

    summary = RiskModel.load(run).predict_file(data, output, resume=not restart)
    if summary.rejected:
        err_console.print(f"warning: {data}: skipped {summary.rejected} bad row(s) → {summary.rejects}", markup=False)
        for row in summary.examples[:10]:
            err_console.print(f"  {row}", markup=False)
    console.print(f"predicted {summary.predicted} patient(s) → {summary.output}")


@risk.command("explain")
def risk_explain(
    run: Path = typer.Argument(..., help="a risk run or model folder"),
    data: Path = typer.Argument(..., help="a CSV/TSV of patients"),
    row: int = typer.Option(2, min=2, help="which patient: the file line (2 = the first data row)"),
    output: Path | None = typer.Option(None, help="also write the attribution chart (PNG)"),
    top: int = typer.Option(10, min=1, help="columns to list"),
) -> None:
    """Per-column attributions (integrated gradients from the mean training patient) for one patient."""
    from tujie_core import DataError
    from tujie_core.report import save_figure
    from tujie_health.clinical.data import read_table
    from tujie_health.clinical.risk import RiskModel

    model = RiskModel.load(run)
    _, rows = read_table(data)
    if row - 2 >= len(rows):
        raise DataError(f"{data}: --row {row} but the file has data rows 2..{len(rows) + 1}")
    try:
        explanation = model.explain(rows[row - 2])
    except DataError as exc:
        raise DataError(f"{data}: row {row}: {exc}") from None
    shown = [(name, f"{value:+.4f}") for name, value in explanation.top(top)]
    title = f"{explanation.output_name}: {explanation.output:.4f}"
    console.print(metrics_table(title, shown, ("column", "attribution")))
    console.print(f"mean patient: {explanation.baseline_output:.4f}; integration gap {explanation.gap:.2e}")
    if output is not None:
        save_figure(explanation.plot(), output)
        console.print(f"chart → {output}")


@app.command("mol-train")
def mol_train(
    config: Path | None = typer.Argument(None, help="run config (YAML); default: a D-MPNN on FreeSolv"),
    data: Path | None = typer.Option(None, help="a CSV/TSV with a SMILES column and target columns"),
    target: list[str] = typer.Option([], help="a target column of --data (repeat for several)"),
    smiles_column: str | None = typer.Option(None, help="the SMILES column (default: found by name)"),
    split: str | None = typer.Option(None, help="random, scaffold or stratified"),
    model: str | None = typer.Option(None, help="dmpnn, gin or attentivefp"),
    seeds: int = typer.Option(1, min=1, help="train an ensemble of this many seeds (uncertainty per molecule)"),
    epochs: int | None = typer.Option(None, help="trainer.max_epochs"),
    resume: Path | None = typer.Option(None, help="a run (or ensemble) folder to continue"),
    overrides: list[str] = typer.Option([], "--set", "-s", help="override a config key: model.hidden=128"),
    dp: str | None = DP_OPTION,
) -> None:
    """Train a molecular property model (regression or (multi-label) classification, missing targets masked) and
    compare it with a Morgan-fingerprint random forest on the same split (report.md)."""
    from tujie_health.molecules.training import train_molecules

    if config is None and resume is not None:
        saved = [resume / "config.yaml", *sorted(resume.glob("seed0/*/config.yaml"))]
        config = next((p for p in saved if p.is_file()), None)
    extra = [f"data.path={data}"] if data is not None else []
    if target:
        extra.append(f"data.targets=[{','.join(target)}]")
    for key, value in (("smiles_column", smiles_column), ("split", split)):
        if value is not None:
            extra.append(f"data.{key}={value}")
    if epochs is not None:
        extra.append(f"trainer.max_epochs={epochs}")
    if model is not None:
        extra.insert(0, f"model={{name: '{model}'}}")
    result = train_molecules(config, [*extra, *overrides], seeds=seeds, dp=dp, resume=resume)
    split_name = "test" if "test" in result.scores else "val"
    for name, row in result.scores.get(split_name, {}).items():
        _print_metrics(f"{name} ({split_name})", row)
    console.print(f"{'ensemble' if seeds > 1 else 'run'} folder: {result.folder}\nreport: {result.report}")


@app.command("mol-evaluate")
def mol_evaluate(
    run: Path = typer.Argument(..., help="a molecule run, model or ensemble folder"),
    data: str = typer.Argument(..., help="a labelled CSV/TSV (the model's target columns), or 'freesolv'"),
    smiles_column: str | None = typer.Option(None, help="the SMILES column (default: found by name)"),
) -> None:
    """RMSE/MAE/R² (regression) or ROC-AUC, PR-AUC, enrichment (EF 1 %, 5 %) and BEDROC (classification) on a
    labelled file; invalid SMILES are counted and left out."""
    from tujie_health.molecules.predictor import MoleculeModel
    from tujie_health.molecules.training import evaluate_file

    _print_metrics(str(data), evaluate_file(MoleculeModel.load(run), data, smiles_column))


@app.command("screen")
def screen_library(
    model: Path = typer.Option(..., "--model", help="a molecule run, model or ensemble folder"),
    library: Path = typer.Option(..., "--library", help="molecules to rank: .smi, or CSV/TSV with a SMILES column"),
    output: Path = typer.Option(Path("screen.csv"), help="the ranked CSV (rejects beside it: OUTPUT.rejects.csv)"),
    target: str | None = typer.Option(None, help="rank by this target (default: the model's first)"),
    ascending: bool = typer.Option(False, "--ascending", help="lowest prediction first (e.g. binding energy)"),
    smiles_column: str | None = typer.Option(None, help="the SMILES column of a CSV (default: found by name)"),
    backend: str = typer.Option("processes", help="processes, threads or dask"),
    scheduler: str | None = typer.Option(None, help="a Dask scheduler address (tcp://host:8786); implies dask"),
    workers: int | None = typer.Option(None, min=1, help="featurising processes / local Dask workers"),
    top: int = typer.Option(10, min=0, help="hits to print"),
    restart: bool = typer.Option(False, "--restart", help="start over instead of resuming an interrupted screen"),
) -> None:
    """Rank a library by predicted score (memory flat in its size, resumable); bad SMILES go to the rejects file."""
    import csv

    from tujie_core.inference import Backend, DaskBackend
    from tujie_health.molecules.screen import screen

    chosen: str | Backend = backend
    if scheduler is not None or backend == "dask":
        chosen = DaskBackend(address=scheduler, workers=workers or 0)
    summary = screen(
        model,
        library,
        output,
        target=target,
        ascending=ascending,
        smiles_column=smiles_column,
        backend=chosen,
        workers=workers,
        resume=not restart,
        progress="auto",
    )
    with summary.output.open(newline="", encoding="utf-8") as handle:
        rows = [r for _, r in zip(range(top + 1), csv.reader(handle), strict=False)]
    if len(rows) > 1:
        console.print(metrics_table(f"top {len(rows) - 1}", [tuple(r) for r in rows[1:]], tuple(rows[0])))
    if summary.rejected:
        err_console.print(f"warning: {library}: skipped {summary.rejected} invalid molecule(s) → {summary.rejects}")
    resumed = f" (resumed after {summary.resumed_from})" if summary.resumed_from else ""
    console.print(
        f"ranked {summary.screened} molecule(s) → {summary.output}{resumed}; "
        f"{summary.molecules_per_second:,.0f} molecules/s",
        markup=False,
    )
