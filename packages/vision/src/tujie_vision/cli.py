"""``tujie vision``: image classification (train, evaluate, predict).

Registered through the ``tujie.cli`` entry point; user errors print one line and exit 2 (core's ``main``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import typer
from rich.console import Console

from tujie_core import TujieError
from tujie_core.cli import DP_OPTION, metrics_table, plugin_flags

app = typer.Typer(help="Vision: image classification on timm architectures or a small CNN.", no_args_is_help=True)
classify = typer.Typer(help="Train, evaluate and apply image classifiers.", no_args_is_help=True)
app.add_typer(classify, name="classify")
console = Console()
err_console = Console(stderr=True)


def bundled_config(name: str = "digits_cnn") -> Path:
    """A run config shipped inside tujie_vision (``configs/<name>.yaml``)."""
    return Path(str(resources.files("tujie_vision") / "configs" / f"{name}.yaml"))


def _print_metrics(title: str, metrics: dict[str, float]) -> None:
    rows = [(k, f"{v:.4f}") for k, v in metrics.items() if not k.endswith(("_micro", "_weighted"))]
    console.print(metrics_table(title, rows, ("metric", "value")))


@classify.command()
def train(
    config: Path | None = typer.Argument(None, help="run config (YAML); default: the small CNN on the digits"),
    data: Path | None = typer.Option(None, help="images: a folder of class folders, a path,label CSV or an .npz"),
    model: str | None = typer.Option(None, help="cnn | timm/<architecture> (timm/resnet18, timm/vit_tiny_…)"),
    image_size: int | None = typer.Option(None, help="resize images to this size (data.image_size)"),
    epochs: int | None = typer.Option(None, help="trainer.max_epochs"),
    init: Path | None = typer.Option(None, help="start from this run's (or weights file's) weights: transfer.init"),
    resume: Path | None = typer.Option(None, help="a run folder to continue"),
    overrides: list[str] = typer.Option([], "--set", "-s", help="override a config key: data.augment=randaugment"),
    dp: str | None = DP_OPTION,
) -> None:
    """Train an image classifier and write a run folder (checkpoints, model/, report.md)."""
    from tujie_core import load_config, train_from_config

    if config is None:
        config = resume / "config.yaml" if resume is not None and (resume / "config.yaml").is_file() else None
    config = config or bundled_config()
    shortcuts = {"data.path": data, "data.image_size": image_size, "trainer.max_epochs": epochs}
    shortcuts |= {"transfer.init": init}
    extra = [f"{key}={value}" for key, value in shortcuts.items() if value is not None]
    if model is not None:  # a new model section: the config's options belong to its own model
        extra.insert(0, f"model={{name: '{model}'}}")
    result = train_from_config(load_config(config, [*extra, *overrides], plugin_flags(dp)), resume=resume)
    _print_metrics("metrics (best checkpoint)", result.metrics)
    console.print(f"run folder: {result.run_dir}\nmodel: {result.run_dir / 'model'}\nreport: {result.report}")


@classify.command()
def evaluate(
    run: Path = typer.Argument(..., help="a run folder (or its model/ folder)"),
    data: Path = typer.Argument(..., help="labelled images: class folders, a path,label CSV or an .npz"),
    path_column: str = typer.Option("path", help="CSV column with image paths"),
    label_column: str = typer.Option("label", help="CSV column with labels"),
    root: Path | None = typer.Option(None, help="folder the CSV's paths are relative to (default: the CSV's)"),
    output_dir: Path | None = typer.Option(None, help="write report.md with plots here"),
) -> None:
    """Metrics of a trained classifier on labelled images."""
    from tujie_vision.classifier import ImageClassifier

    evaluation = ImageClassifier.load(run).evaluate(
        data, path_column=path_column, label_column=label_column, root=root, output_dir=output_dir
    )
    _print_metrics(str(data), evaluation.metrics)
    if output_dir is not None:
        console.print(f"report: {output_dir / 'report.md'}")


@classify.command()
def predict(
    run: Path = typer.Argument(..., help="a run folder (or its model/ folder)"),
    inputs: Path = typer.Argument(..., help="a folder of images, a .txt list of paths, an .npz or one image"),
    output: Path = typer.Argument(..., help="CSV to write (file, label, score, p_<class>...)"),
    batch_size: int = typer.Option(64, min=1),
    chunk_size: int = typer.Option(256, min=1, help="images read, predicted and written at a time"),
    workers: int | None = typer.Option(None, min=1, help="decoding threads (default: one per core)"),
    restart: bool = typer.Option(False, "--restart", help="start over instead of resuming an interrupted run"),
) -> None:
    """Classify every image, streaming; unreadable files go to OUTPUT.rejects.csv with the reason, and a rerun
    after an interruption resumes where it stopped."""
    from tujie_vision.classifier import ImageClassifier

    summary = ImageClassifier.load(run).predict_files(
        inputs,
        output,
        batch_size=batch_size,
        chunk_size=chunk_size,
        workers=workers,
        resume=not restart,
        progress="auto",
    )
    if summary.rejected:
        err_console.print(f"warning: {inputs}: skipped {summary.rejected} bad file(s)", markup=False)
        for row in summary.examples[:10]:
            err_console.print(f"  {row}", markup=False)
        err_console.print(f"  all of them → {summary.rejects}", markup=False)
    resumed = f" (resumed after {summary.resumed_from})" if summary.resumed_from else ""
    console.print(f"predicted {summary.predicted} image(s) → {summary.output}{resumed}")


detect = typer.Typer(help="Train, evaluate and apply YOLO detectors (ultralytics, offline).", no_args_is_help=True)
app.add_typer(detect, name="detect")


def bundled_detection_config() -> Path:
    return bundled_config("vehicles_yolo")


@detect.command("train")
def detect_train(
    config: Path | None = typer.Argument(None, help="detection run config (YAML); default: YOLO11n on driving scenes"),
    data: Path | None = typer.Option(None, help="a YOLO data.yaml (default: generated driving scenes)"),
    model: str | None = typer.Option(None, help="architecture yaml (yolo11n.yaml, yolov8s.yaml, a file) or your .pt"),
    epochs: int | None = typer.Option(None, help="epochs"),
    imgsz: int | None = typer.Option(None, help="training image size"),
    resume: Path | None = typer.Option(None, help="a detection run folder to continue"),
    overrides: list[str] = typer.Option([], "--set", "-s", help="override a config key: options.mosaic=0.5"),
) -> None:
    """Train a YOLO detector in a tujie run folder (ultralytics/ weights, metrics.jsonl, report.md)."""
    from tujie_core import load_config, train_from_config

    if config is None:
        config = resume / "config.yaml" if resume is not None and (resume / "config.yaml").is_file() else None
    shortcuts = {"data.yaml": data, "model": model, "epochs": epochs, "imgsz": imgsz}
    extra = [f"{key}={value}" for key, value in shortcuts.items() if value is not None]
    result = train_from_config(load_config(config or bundled_detection_config(), [*extra, *overrides]), resume=resume)
    _print_metrics("metrics (best weights)", result.metrics)
    console.print(f"run folder: {result.run_dir}\nreport: {result.report}")


@detect.command("evaluate")
def detect_evaluate(
    run: Path = typer.Argument(..., help="a detection run folder"),
    data: Path | None = typer.Option(None, help="a YOLO data.yaml (default: the run's own)"),
    split: str = typer.Option("val", help="val | test | train"),
) -> None:
    """Precision, recall, mAP50 and mAP50-95 of a run's best weights on a split of a YOLO dataset."""
    import yaml

    from tujie_vision.detection import WEIGHTS, check_data_yaml, data_yaml_of, evaluate_weights

    if not (run / WEIGHTS / "best.pt").is_file():
        raise TujieError(f"{run}: not a detection run folder (no {WEIGHTS / 'best.pt'})")
    data_file = check_data_yaml(data) if data is not None else data_yaml_of(run)
    imgsz = int(yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["imgsz"])
    _print_metrics(f"{data_file} ({split})", evaluate_weights(run / WEIGHTS / "best.pt", data_file, split, imgsz))


@detect.command("predict")
def detect_predict(
    run: Path = typer.Argument(..., help="a detection run folder"),
    inputs: Path = typer.Argument(..., help="a folder of images, a .txt list of paths or one image"),
    output: Path = typer.Argument(..., help="CSV to write (file, count, boxes as JSON)"),
    conf: float = typer.Option(0.25, min=0, max=1, help="confidence threshold"),
    chunk_size: int = typer.Option(64, min=1, help="images read, predicted and written at a time"),
    restart: bool = typer.Option(False, "--restart", help="start over instead of resuming an interrupted run"),
) -> None:
    """Detect objects in every image, streaming; unreadable files go to OUTPUT.rejects.csv."""
    from tujie_vision.detection import YoloDetector, predict_files

    summary = predict_files(
        YoloDetector.load(run, conf=conf), inputs, output, chunk_size=chunk_size, resume=not restart
    )
    if summary.rejected:
        err_console.print(f"warning: {inputs}: skipped {summary.rejected} bad file(s)", markup=False)
        for row in summary.examples[:10]:
            err_console.print(f"  {row}", markup=False)
    console.print(f"predicted {summary.predicted} image(s) → {summary.output}")


@app.command("make-driving-data")
def make_driving_data(
    output: Path = typer.Argument(..., help="folder to write the YOLO dataset into"),
    scenario: str = typer.Option("highway-fast", help="highway-fast | highway | merge | roundabout | intersection…"),
    frames: int = typer.Option(200, min=1, help="training frames"),
    val_frames: int = typer.Option(50, min=0, help="validation frames (episodes with other seeds)"),
    seed: int = typer.Option(0),
    width: int = typer.Option(400, min=32),
    height: int = typer.Option(200, min=32),
    density: float = typer.Option(1.5, help="traffic density (vehicles_density)"),
) -> None:
    """Render highway-env frames and label every vehicle from simulator state: a YOLO dataset."""
    import yaml

    from tujie_vision.scenes import make_driving_data as make

    path = make(
        output,
        scenario=scenario,
        frames_count=frames,
        val_frames=val_frames,
        seed=seed,
        width=width,
        height=height,
        vehicles_density=density,
    )
    facts = yaml.safe_load(path.read_text(encoding="utf-8"))["tujie"]
    console.print(f"{facts['frames']} + {facts['val_frames']} frames, {facts['boxes']} boxes → {path}")


@app.command()
def export(
    run: Path = typer.Argument(..., help="an image classification or detection run folder"),
    output: Path | None = typer.Option(None, help="ONNX file (default: beside the run's weights)"),
    atol: float = typer.Option(1e-3, help="largest allowed |ONNX − PyTorch| on random inputs"),
    imgsz: int | None = typer.Option(None, help="detector input size (default: the training size)"),
) -> None:
    """Export a trained model to ONNX, check parity with PyTorch and compare their CPU latency."""
    from tujie_vision.export import export_run

    try:
        result = export_run(run, output, atol=atol, imgsz=imgsz)
    except ValueError as exc:
        raise TujieError(str(exc)) from None
    console.print(result.describe())


gan = typer.Typer(help="A conditional DCGAN: synthesise images of a chosen class.", no_args_is_help=True)
app.add_typer(gan, name="gan")


@gan.command("train")
def gan_train(
    config: Path | None = typer.Argument(None, help="GAN run config (YAML); default: the digits at 16×16"),
    data: Path | None = typer.Option(None, help="images: class folders, a path,label CSV or an .npz"),
    image_size: int | None = typer.Option(None, help="square power of two, 8–128"),
    epochs: int | None = typer.Option(None),
    resume: Path | None = typer.Option(None, help="a GAN run folder to continue"),
    overrides: list[str] = typer.Option([], "--set", "-s", help="override a config key: latent_dim=100"),
) -> None:
    """Train a conditional DCGAN in a run folder (model/, samples grid, report.md)."""
    from tujie_core import load_config, train_from_config

    if config is None:
        config = resume / "config.yaml" if resume is not None and (resume / "config.yaml").is_file() else None
    shortcuts = {"data.path": data, "data.image_size": image_size, "epochs": epochs}
    extra = [f"{key}={value}" for key, value in shortcuts.items() if value is not None]
    result = train_from_config(load_config(config or bundled_config("digits_gan"), [*extra, *overrides]), resume=resume)
    _print_metrics("last epoch", result.metrics)
    console.print(f"run folder: {result.run_dir}\nsamples: {result.run_dir / 'plots' / 'samples.png'}")


@gan.command("sample")
def gan_sample(
    run: Path = typer.Argument(..., help="a GAN run folder"),
    output: Path = typer.Argument(..., help="folder to write <class>/<n>.png into (an images folder)"),
    label: list[str] = typer.Option(..., "--class", help="class to draw (repeat for several)"),
    count: int = typer.Option(100, min=1, help="images per class"),
    seed: int = typer.Option(0),
) -> None:
    """Draw images of chosen classes from a trained GAN, as a class-folder tree ready for data.extra_train."""
    from tujie_vision.gan import ConditionalGAN

    folder = ConditionalGAN.load(run).save_samples(output, dict.fromkeys(label, count), seed)
    console.print(f"{count} image(s) of {', '.join(label)} → {folder}")
