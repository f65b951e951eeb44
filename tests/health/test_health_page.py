"""The app's Medical imaging page (apps/views/imaging.py), run headless with AppTest on real run folders."""

from __future__ import annotations

import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tujie_core import load_config, train_from_config
from tujie_health.cli import bundled_config

TIMEOUT = 180


def test_without_runs_the_page_says_how_to_train_each_part(tmp_path: Path, open_page) -> None:
    page = open_page("imaging", timeout=TIMEOUT)
    assert not page.exception
    infos = " ".join(i.value for i in page.info)
    for command in ("tujie health segment train", "tujie health classify-images train", "tujie health risk train"):
        assert command in infos


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("health-runs")
    quiet = [f"output_dir={root}", "trainer.progress=none", "trainer.max_epochs=1"]
    tiny_volumes = ["data.synthetic={count: 6, size: 24, seed: 0}", "data.patch_size=[16,16,16]"]
    tiny_volumes += ["model.channels=[4,8]", "model.strides=[2]", "model.num_res_units=1"]
    train_from_config(load_config(bundled_config(), [*quiet, *tiny_volumes]))
    train_from_config(load_config(bundled_config("lesions_cnn"), [*quiet, "data.synthetic={count: 80, seed: 0}"]))
    from tujie_health.clinical import train_risk

    train_risk(overrides=[*quiet, "trainer.max_epochs=5"])
    return root


def test_with_runs_the_page_segments_classifies_and_scores_a_patient(runs: Path, open_page) -> None:
    page = open_page("imaging", runs, timeout=TIMEOUT)
    assert not page.exception
    captions = [img.caption for element in page.image for img in element.proto.imgs]
    assert any(c.startswith("slice ") and "predicted mask (red)" in c for c in captions)
    assert any("gradcam overlay" in c for c in captions)
    labels = {m.label: m.value for m in page.metric}
    assert "foreground volume" in labels and "Dice against the truth" in labels
    assert 0 <= float(labels["P(lesion)"]) <= 1
    risk = next(v for k, v in labels.items() if k.startswith("P(malignant), calibrated"))
    assert 0 <= float(risk) <= 1
    slider = next(s for s in page.slider if s.label == "slice")
    slider.set_value(0).run()
    captions = [img.caption for element in page.image for img in element.proto.imgs]
    assert any(c.startswith("slice 0 of 24") for c in captions)
    # a bigger tumour radius moves the risk up
    radius = next(n for n in page.number_input if n.label == "mean radius")
    radius.set_value(25.0).run()
    higher = next(m.value for m in page.metric if m.label.startswith("P(malignant)"))
    assert float(higher) > float(risk)


def test_an_uploaded_volume_is_segmented_and_a_bad_one_gets_a_message(runs: Path, tmp_path, open_page) -> None:
    page = open_page("imaging", runs, timeout=TIMEOUT)
    volume = np.zeros((24, 24, 24), np.float32)
    volume[8:16, 8:16, 8:16] = 1.0
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([1.5, 1.5, 2.0, 1.0])), str(path))
    page.file_uploader[0].upload("scan.nii.gz", path.read_bytes(), "application/gzip").run()
    assert not page.exception
    captions = [img.caption for element in page.image for img in element.proto.imgs]
    assert any(c.startswith("slice ") and "true outline" not in c for c in captions)
    page.file_uploader[0].upload("broken.nii.gz", io.BytesIO(b"not a volume").getvalue(), "application/gzip").run()
    assert not page.exception and any("broken" in e.value or "nii" in e.value for e in page.error)
