"""Driving-scene data and YOLO detection as a kind of run: boxes on the vehicles, one offline epoch, resume, the
detector protocol, streaming prediction, ONNX parity, and one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tujie_core import Callback, ConfigError, DataError, load_config, train_from_config
from tujie_core.config import ParamSpec
from tujie_core.protocols import Detection, Detector
from tujie_core.runs import kind_of, parse_config
from tujie_vision.scenes import SceneOptions, frames, make_driving_data

ROAD_GRAY = np.array([100, 100, 100])


def test_boxes_from_simulator_state_land_on_the_vehicles() -> None:
    for frame, boxes in frames(SceneOptions(), count=3, seed=4):
        assert frame.shape == (200, 400, 3) and frame.std() > 5  # a real rendering, not a blank frame
        assert len(boxes) >= 2
        for x1, y1, x2, y2 in boxes.astype(int):
            inside = frame[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].reshape(-1, 3)
            off_road = np.abs(inside.astype(int) - ROAD_GRAY).sum(1) > 30
            assert off_road.mean() > 0.6, (x1, y1, x2, y2)  # the box is filled by the vehicle's body
        gray = np.abs(frame.astype(int) - ROAD_GRAY).sum(2) <= 30
        covered = np.zeros(gray.shape, bool)
        for x1, y1, x2, y2 in boxes.astype(int):
            covered[y1:y2, x1:x2] = True
        vehicle_colour = ~gray & ~(frame.min(2) > 200)  # neither road nor white lane marking
        assert vehicle_colour[~covered].mean() < 0.01  # no vehicle pixel outside every box


def test_a_yolo_dataset_is_written_with_held_out_episodes(tmp_path: Path) -> None:
    path = make_driving_data(tmp_path / "d", frames_count=4, val_frames=2, seed=1)
    data = yaml.safe_load(path.read_text())
    assert data["names"] == {0: "vehicle"} and data["tujie"]["boxes"] > 0
    labels = sorted((tmp_path / "d" / "labels" / "train").glob("*.txt"))
    assert len(labels) == 4 and len(list((tmp_path / "d" / "images" / "val").glob("*.png"))) == 2
    rows = np.array([list(map(float, line.split())) for line in labels[0].read_text().splitlines()])
    assert (rows[:, 0] == 0).all() and (rows[:, 1:] >= 0).all() and (rows[:, 1:] <= 1).all()
    train_first = np.asarray(Image.open(tmp_path / "d" / "images" / "train" / "train_000000.png"))
    val_first = np.asarray(Image.open(tmp_path / "d" / "images" / "val" / "val_000000.png"))
    assert not np.array_equal(train_first, val_first)
    with pytest.raises(ConfigError, match="no highway-env scenario 'moon'"):
        make_driving_data(tmp_path / "x", scenario="moon")


def _config(tmp_path: Path, **extra):
    return parse_config(
        {
            "kind": "detection",
            "name": "det",
            "output_dir": str(tmp_path),
            "data": {"generate": {"frames": 8, "val_frames": 2, "seed": 0}},
            "epochs": 1,
            "imgsz": 128,
            "batch": 4,
            **extra,
        }
    )


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory):
    return train_from_config(_config(tmp_path_factory.mktemp("det")))


def test_one_offline_yolo_epoch_is_a_run_folder(detection_run) -> None:
    run = detection_run.run_dir
    assert {"val/mAP50", "val/mAP50-95", "val/precision", "val/recall"} <= set(detection_run.metrics)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["kind"] == "detection" and summary["epochs"] == 1
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "ultralytics" / "weights" / "best.pt").is_file()
    assert "Detection run: det" in detection_run.report.read_text()
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 0


def test_the_detector_implements_core_protocol(detection_run) -> None:
    detector = detection_run.model
    assert isinstance(detector, Detector) and detector.class_names == ["vehicle"]
    frame = np.asarray(Image.open(next((detection_run.run_dir / "data" / "images" / "val").glob("*.png"))))
    found = detector.detect(frame)
    assert isinstance(found, list) and all(isinstance(d, Detection) for d in found)
    with pytest.raises(DataError, match=r"RGB array \(H, W, 3\)"):
        detector.detect(frame[..., 0])


def test_the_detector_loads_by_name_from_cores_registry(detection_run) -> None:
    from tujie_core.protocols import DETECTORS

    detector = DETECTORS.create("yolo", run_dir=str(detection_run.run_dir), conf=0.1)
    assert isinstance(detector, Detector) and detector.conf == 0.1  # a consumer (driving) never imports tujie_vision


def test_streaming_prediction_reports_bad_files(detection_run, tmp_path: Path) -> None:
    from tujie_vision.detection import predict_files

    images = detection_run.run_dir / "data" / "images" / "val"
    folder = tmp_path / "in"
    folder.mkdir()
    for image in images.glob("*.png"):
        (folder / image.name).write_bytes(image.read_bytes())
    (folder / "broken.png").write_bytes(b"nope")
    summary = predict_files(detection_run.model, folder, tmp_path / "boxes.csv", chunk_size=1)
    assert (summary.predicted, summary.rejected) == (2, 1)
    rows = list(csv.DictReader((tmp_path / "boxes.csv").open()))
    assert all(int(r["count"]) == len(json.loads(r["boxes"])) for r in rows)


def test_a_detection_run_resumes_in_place(tmp_path: Path) -> None:
    class Crash(Callback):
        def on_train_epoch_end(self, trainer, metrics):
            if trainer.state.epoch == 1:
                raise RuntimeError("power cut")

    config = _config(tmp_path, epochs=2)
    with pytest.raises(RuntimeError, match="power cut"):
        train_from_config(config, callbacks=[Crash()])
    (run,) = (tmp_path / "det").iterdir()
    resumed = train_from_config(config, resume=run)
    assert resumed.run_dir == run and json.loads((run / "summary.json").read_text())["epochs"] == 2


def test_a_relative_output_folder_keeps_the_weights_in_the_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # `make demo` writes to runs/demo, relative to where it runs
    result = train_from_config(_config(Path("relative")))
    assert not result.run_dir.is_absolute()
    assert (tmp_path / result.run_dir / "ultralytics" / "weights" / "best.pt").is_file()
    assert "val/mAP50" in result.metrics


def test_onnx_export_matches_pytorch(detection_run) -> None:
    from tujie_vision.export import export_run

    result = export_run(detection_run.run_dir, repeats=3)
    assert result.path.suffix == ".onnx" and result.path.is_file()
    assert result.max_abs_diff < 1e-3 and result.torch_ms > 0 and result.onnx_ms > 0


def test_detection_configs_fail_with_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"options\.epochs: set it as the config's own key"):
        _config(tmp_path, options={"epochs": 3})
    with pytest.raises(ConfigError, match=r"options\.mosiac: not an ultralytics training argument"):
        _config(tmp_path, options={"mosiac": 0.5})
    with pytest.raises(ConfigError, match="take no plugins"):
        _config(tmp_path, plugins=[{"name": "dp", "epsilon": 3}])
    config = _config(tmp_path, data={"yaml": str(tmp_path / "missing.yaml")})
    with pytest.raises(DataError, match=r"missing\.yaml: no such data\.yaml"):
        train_from_config(config)
    kind_of(config).check_space(config, {"lr0": ParamSpec(type="float", low=1e-3, high=1e-1)})
    with pytest.raises(ConfigError, match=r"tune\.space\.imgsz"):
        kind_of(config).check_space(config, {"imgsz": ParamSpec(type="int", low=1, high=2)})


def test_detect_and_export_cli(tujie, detection_run, tmp_path: Path) -> None:
    made = tujie(
        "vision", "make-driving-data", str(tmp_path / "scenes"), "--frames", "2", "--val-frames", "1", cwd=tmp_path
    )
    assert made.returncode == 0 and (tmp_path / "scenes" / "data.yaml").is_file()
    evaluated = tujie("vision", "detect", "evaluate", str(detection_run.run_dir), cwd=tmp_path)
    assert evaluated.returncode == 0 and "mAP50" in evaluated.stdout
    predicted = tujie(
        "vision",
        "detect",
        "predict",
        str(detection_run.run_dir),
        str(tmp_path / "scenes" / "images" / "val"),
        str(tmp_path / "p.csv"),
        cwd=tmp_path,
    )
    assert predicted.returncode == 0 and "predicted 1 image(s)" in predicted.stdout
    exported = tujie("vision", "export", str(detection_run.run_dir), "--output", str(tmp_path / "m.onnx"), cwd=tmp_path)
    assert exported.returncode == 0 and "m.onnx: max |ONNX − PyTorch|" in exported.stdout
    bad = tujie(
        "vision", "detect", "train", "--data", str(tmp_path / "none.yaml"), "-s", f"output_dir={tmp_path}", cwd=tmp_path
    )
    assert bad.returncode == 2 and "none.yaml: no such data.yaml" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert tujie("vision", "export", str(tmp_path), cwd=tmp_path).returncode == 2


def test_the_bundled_detection_config_parses() -> None:
    from tujie_vision.cli import bundled_detection_config

    assert load_config(bundled_detection_config()).kind == "detection"


def _yolo_dataset(root: Path, labels: dict[str, str]) -> Path:
    """A YOLO dataset of one train and one val image (labels: image stem → label file text) with classes a, b."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(root / "images" / split / f"{split}.png")
        (root / "labels" / split / f"{split}.txt").write_text(labels.get(split, "0 0.5 0.5 0.2 0.2\n"))
    data = root / "data.yaml"
    data.write_text(
        yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val", "names": ["a", "b"]})
    )
    return data


def test_a_bad_yolo_dataset_fails_naming_the_file_and_line(tmp_path: Path) -> None:
    from tujie_vision.detection import check_data_yaml

    assert check_data_yaml(_yolo_dataset(tmp_path / "ok", {"train": "1 0.5 0.5 0.2 0.2\n\n"})).is_file()
    cases = {
        "class": ({"train": "0 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.1 0.1\n"}, r"train\.txt: line 2: class 2 outside 0\.\.1"),
        "coords": ({"val": "0 50 40 10 10\n"}, r"val\.txt: line 1: coordinates must be normalised to \[0, 1\]"),
        "fields": ({"train": "0 0.5 0.5\n"}, r"train\.txt: line 1: expected 'class x_center y_center width height'"),
        "text": ({"train": "car 0.5 0.5 0.2 0.2\n"}, r"train\.txt: line 1: not numbers"),
    }
    for name, (labels, message) in cases.items():
        with pytest.raises(DataError, match=message):
            check_data_yaml(_yolo_dataset(tmp_path / name, labels))
    truncated = _yolo_dataset(tmp_path / "truncated", {})
    image = tmp_path / "truncated" / "images" / "val" / "val.png"
    image.write_bytes(image.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"val\.png: cannot read image \((?!.*cannot read)"):  # said once
        check_data_yaml(truncated)
    photos = _yolo_dataset(tmp_path / "jpeg", {"train": "\ufeff0 0.5 0.5 0.2 1.005\n"})  # BOM, 1 % tolerance
    for split in ("train", "val"):
        png = tmp_path / "jpeg" / "images" / split / f"{split}.png"
        Image.open(png).save(png.with_suffix(".jpg"), quality=90)
        png.unlink()
    photo = tmp_path / "jpeg" / "images" / "val" / "val.jpg"
    photo.write_bytes(photo.read_bytes() + b"\x00\x00")  # bytes after the end marker: still a good image
    assert check_data_yaml(photos).is_file()
    photo.write_bytes(photo.read_bytes()[:-200])  # changed since the check: checked again, not taken as good
    with pytest.raises(DataError, match=r"val\.jpg: cannot read image"):
        check_data_yaml(photos)
    empty = _yolo_dataset(tmp_path / "empty", {})
    (tmp_path / "empty" / "images" / "train" / "train.png").unlink()
    with pytest.raises(DataError, match=r"data\.yaml: train: .*images/train holds no images"):
        check_data_yaml(empty)


def test_detection_trains_through_the_clis_and_is_tuned_like_any_run(tujie, detection_run, tmp_path: Path) -> None:
    from tujie_core.tune import tune

    data = detection_run.run_dir / "data" / "data.yaml"
    raw = {
        "kind": "detection",
        "name": "det",
        "output_dir": str(tmp_path / "tune"),
        "data": {"yaml": str(data)},
        "epochs": 1,
        "imgsz": 128,
        "batch": 4,
        "tune": {"space": {"lr0": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}, "trials": 2},
    }
    result = tune(parse_config(raw))
    assert (result.n_complete, result.n_failed) == (2, 0) and 0 <= result.best_value <= 1
    assert 1e-3 <= result.best_params["lr0"] <= 1e-2 and result.best_config.is_file()
    config = tmp_path / "vehicles.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in raw.items() if k != "tune"} | {"output_dir": str(tmp_path)}))
    trained = tujie("train", str(config), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    (run,) = (tmp_path / "det").iterdir()
    assert json.loads((run / "summary.json").read_text())["kind"] == "detection"
    bad = _yolo_dataset(tmp_path / "bad", {"train": "5 0.5 0.5 0.2 0.2\n"})
    refused = tujie("vision", "detect", "train", "--data", str(bad), "-s", f"output_dir={tmp_path}", cwd=tmp_path)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "train.txt: line 1: class 5 outside 0..1" in refused.stderr
