"""``tujie vision classify``: train, evaluate, predict; bad input exits 2 with one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_classify_train_evaluate_predict(tujie, tmp_path: Path, class_folder: Path) -> None:
    done = tujie(
        "vision",
        "classify",
        "train",
        "--data",
        str(class_folder),
        "--epochs",
        "2",
        "-s",
        f"output_dir={tmp_path}",
        "-s",
        "model.channels=[8,16]",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (run,) = (tmp_path / "digits-cnn").iterdir()
    assert (run / "model" / "model.safetensors").is_file() and "test/accuracy" in done.stdout
    evaluated = tujie("vision", "classify", "evaluate", str(run), str(class_folder), cwd=tmp_path)
    assert evaluated.returncode == 0 and "test/accuracy" in evaluated.stdout
    (class_folder / "circle" / "bad.png").write_bytes(b"junk")
    predicted = tujie(
        "vision", "classify", "predict", str(run), str(class_folder), str(tmp_path / "p.csv"), cwd=tmp_path
    )
    assert predicted.returncode == 0 and "predicted 30 image(s)" in predicted.stdout
    assert "skipped 1 bad file(s)" in predicted.stderr and "circle/bad.png" in predicted.stderr
    exported = tujie("vision", "export", str(run), "--output", str(tmp_path / "clf.onnx"), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "clf.onnx: max |ONNX − PyTorch|" in exported.stdout and (tmp_path / "clf.onnx").is_file()


def test_a_timm_model_from_the_command_line(tujie, tmp_path: Path) -> None:
    done = tujie(
        "vision",
        "classify",
        "train",
        "--model",
        "timm/resnet10t",
        "--epochs",
        "1",
        "-s",
        f"output_dir={tmp_path}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (run,) = (tmp_path / "digits-cnn").iterdir()
    assert "timm/resnet10t" in (run / "report.md").read_text()


def test_bad_input_exits_2_with_one_line(tujie, tmp_path: Path) -> None:
    cases = [
        (("train", "--data", str(tmp_path / "nothing")), "nothing: no such file or folder"),
        (("train", "--model", "timm/resnet1000"), "no architecture 'resnet1000'"),
        (("predict", str(tmp_path), str(tmp_path), str(tmp_path / "o.csv")), "not a trained classifier"),
    ]
    np.savez(tmp_path / "five.npz", images=np.zeros((4, 8, 8, 5), np.uint8), labels=np.zeros(4))
    cases.append((("train", "--data", str(tmp_path / "five.npz")), "1 or 3 channels"))
    for args, message in cases:
        done = (
            tujie(
                "vision", "classify", *args, "-s", f"output_dir={tmp_path}" if args[0] == "train" else "", cwd=tmp_path
            )
            if args[0] == "train"
            else tujie("vision", "classify", *args, cwd=tmp_path)
        )
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
