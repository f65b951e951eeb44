"""The app's Vision page (apps/views/vision.py), run headless with AppTest on real run folders."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from tujie_core import train_from_config
from tujie_core.runs import parse_config


def test_without_runs_the_page_shows_a_generated_frame_and_how_to_train(tmp_path: Path, open_page) -> None:
    page = open_page("vision", timeout=180)
    assert not page.exception
    infos = " ".join(i.value for i in page.info)
    assert "tujie vision classify train" in infos and "tujie vision detect train" in infos
    assert "tujie vision gan train" in infos
    assert "simulator state" in page.image[0].proto.imgs[0].caption


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for raw in (
        {
            "name": "clf",
            "data": {"name": "images", "batch_size": 128},
            "model": {"name": "cnn", "channels": [8, 16]},
            "trainer": {"max_epochs": 1, "progress": "none"},
        },
        {
            "kind": "gan",
            "name": "gan",
            "epochs": 1,
            "width": 8,
            "latent_dim": 8,
            "data": {"name": "images", "image_size": 8, "batch_size": 128},
        },
        {
            "kind": "detection",
            "name": "det",
            "data": {"generate": {"frames": 4, "val_frames": 2}},
            "epochs": 1,
            "imgsz": 128,
            "batch": 4,
        },
    ):
        train_from_config(parse_config({"output_dir": str(root), **raw}))
    return root


def test_with_runs_the_page_classifies_detects_and_draws(runs: Path, open_page) -> None:
    page = open_page("vision", runs, timeout=180)
    assert not page.exception
    assert page.metric[0].label == "predicted class" and page.metric[0].value in [str(d) for d in range(10)]
    captions = [img.caption for element in page.image for img in element.proto.imgs]
    assert any("detections (red)" in c for c in captions) and any("16 samples of class 0" in c for c in captions)
    page.selectbox[-1].set_value("7").run()
    captions = [img.caption for element in page.image for img in element.proto.imgs]
    assert any("16 samples of class 7" in c for c in captions)


def test_uploads_are_classified_and_bad_ones_get_a_message(runs: Path, open_page) -> None:
    page = open_page("vision", runs, timeout=180)
    buffer = io.BytesIO()
    Image.fromarray((load_digits().images[3] * 16).clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    page.file_uploader[0].upload("three.png", buffer.getvalue(), "image/png").run()
    assert not page.exception and page.metric[0].label == "predicted class"
    page.file_uploader[0].upload("fake.png", b"not a png", "image/png").run()
    assert not page.exception and "fake.png: not a readable image" in page.error[0].value
