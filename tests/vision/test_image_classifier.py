"""ImageClassifier: trains through the core run (timm or the small CNN), resumes exactly with augmentation,
predicts arrays, files and folders (bad files reported, good ones all predicted), evaluates, trains with DP."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.datasets import load_digits

from tujie_core import ConfigError, DataError, RunConfig, train_from_config
from tujie_vision.classifier import ImageClassifier

TINY_CNN = {"name": "cnn", "channels": [16, 32]}


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory) -> ImageClassifier:
    out = tmp_path_factory.mktemp("runs")
    return ImageClassifier.train(
        data={"image_size": 16, "batch_size": 32},
        model=TINY_CNN,
        epochs=4,
        output_dir=out,
        trainer={"progress": "none"},
        optimizer={"name": "adamw", "lr": 0.01},
    )


def test_a_trained_classifier_predicts_arrays_paths_and_pil_images(digits_classifier, tmp_path: Path) -> None:
    assert digits_classifier.result.metrics["test/accuracy"] > 0.8  # 0.90 measured; chance is 0.1
    digits = load_digits()
    pixels = (digits.images[:40] * 16).clip(0, 255).astype(np.uint8)
    predictions = digits_classifier.predict(list(pixels))
    assert np.mean([p.label == str(t) for p, t in zip(predictions, digits.target[:40], strict=True)]) > 0.8
    assert abs(sum(predictions[0].probabilities.values()) - 1) < 1e-5
    from PIL import Image

    Image.fromarray(pixels[0]).save(tmp_path / "d.png")
    same = digits_classifier.predict([tmp_path / "d.png", Image.fromarray(pixels[0])])
    assert same[0] == same[1] and same[0].label == predictions[0].label
    reloaded = ImageClassifier.load(digits_classifier.result.run_dir)
    assert reloaded.predict(list(pixels[:5])) == predictions[:5]


def test_batch_prediction_reports_bad_files_and_predicts_every_good_one(digits_classifier, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    pixels = (load_digits().images[:7] * 16).clip(0, 255).astype(np.uint8)
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(folder / ("sub" if i % 2 else "") / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    data = (folder / "0.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    (folder / "readme.md").write_text("not an image")
    summary = digits_classifier.predict_files(folder, tmp_path / "out.csv", chunk_size=3, workers=2)
    assert (summary.rows, summary.predicted, summary.rejected) == (10, 7, 3)
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert sorted(r["file"] for r in rows) == sorted(
        ["0.png", "2.png", "4.png", "6.png", "sub/1.png", "sub/3.png", "sub/5.png"]
    )
    expected = {f"{i}.png": p.label for i, p in enumerate(digits_classifier.predict(list(pixels)))}
    assert all(r["label"] == expected[Path(r["file"]).name] for r in rows)
    rejects = {r["file"]: r["reason"] for r in csv.DictReader(summary.rejects.open())}
    assert set(rejects) == {"broken.png", "cut.png", "readme.md"}
    assert "truncated" in rejects["cut.png"] and "not an image file" in rejects["readme.md"]


def test_evaluation_on_a_labelled_folder(digits_classifier, tmp_path: Path) -> None:
    from PIL import Image

    digits = load_digits()
    for i in range(30):
        path = tmp_path / "eval" / str(digits.target[i]) / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 16).clip(0, 255).astype(np.uint8)).save(path)
    evaluation = digits_classifier.evaluate(tmp_path / "eval", output_dir=tmp_path / "report")
    assert 0.5 < evaluation.metrics["test/accuracy"] <= 1.0
    assert (tmp_path / "report" / "report.md").is_file()
    (tmp_path / "eval" / "cat").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "eval" / "cat" / "c.png")
    with pytest.raises(DataError, match="labels cat are not classes of this model"):
        digits_classifier.evaluate(tmp_path / "eval")


def _run(tmp_path: Path, **extra) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "aug",
            "output_dir": str(tmp_path),
            "data": {"name": "images", "image_size": 12, "augment": "randaugment", "mixup": 0.2, "batch_size": 128},
            "model": {"name": "timm/resnet10t"},
            "trainer": {"max_epochs": 2, "progress": "none"},
            **extra,
        }
    )


def test_an_augmented_timm_run_resumes_exactly(tmp_path: Path) -> None:
    whole = train_from_config(_run(tmp_path / "whole"))
    first = train_from_config(_run(tmp_path / "part", trainer={"max_epochs": 1, "progress": "none"}))
    resumed = train_from_config(_run(tmp_path / "part"), resume=first.run_dir)
    a = load_file(str(whole.run_dir / "model" / "model.safetensors"))
    b = load_file(str(resumed.run_dir / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_dp_plugin_trains_an_image_model_and_refuses_mixup(tmp_path: Path) -> None:
    pytest.importorskip("tujie_privacy")
    config = RunConfig.model_validate(
        {
            "name": "dp",
            "output_dir": str(tmp_path),
            "data": {"name": "images", "batch_size": 128},
            "model": {"name": "cnn", "channels": [8, 16]},  # BatchNorm: the plugin swaps in GroupNorm
            "optimizer": {"name": "adamw", "lr": 0.01},
            "trainer": {"max_epochs": 2, "progress": "none"},
            "plugins": [{"name": "dp", "epsilon": 8.0}],
        }
    )
    result = train_from_config(config)
    assert result.metrics["test/accuracy"] > 0.2  # chance is 0.1
    classifier = ImageClassifier.load(result.run_dir)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in classifier.model.modules())
    mixed = config.model_copy(update={"data": config.data.model_copy(update={"mixup": 0.2})})
    with pytest.raises(ConfigError, match="batches mix samples"):
        train_from_config(RunConfig.model_validate(mixed.model_dump()))


def test_image_runs_are_tuned_and_compressed_like_any_run(tmp_path: Path) -> None:
    from tujie_core import compress_run
    from tujie_core.runs import parse_config
    from tujie_core.tune import tune

    raw = {
        "name": "tuned",
        "output_dir": str(tmp_path),
        "data": {"name": "images", "batch_size": 128},
        "model": {"name": "cnn", "channels": [8, 16]},
        "trainer": {"max_epochs": 1, "progress": "none", "monitor": "val/accuracy", "mode": "max"},
        "tune": {
            "space": {
                "data.augment": {"type": "categorical", "choices": ["none", "light"]},
                "optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
            },
            "trials": 2,
            "pruner": None,
        },
    }
    result = tune(parse_config(raw))
    assert result.best_config.is_file() and 0 < result.best_value <= 1
    run = train_from_config(parse_config({k: v for k, v in raw.items() if k != "tune"}))
    table = compress_run(run.run_dir, ["prune", "int8"], fine_tune_epochs=0)
    assert [row.method for row in table.rows][1:] == ["prune", "int8"]
    assert all(row.metric is not None and row.metric > 0.1 for row in table.rows)
