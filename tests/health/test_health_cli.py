"""``tujie health segment train|evaluate|predict`` and ``make-volumes``: a tiny run end to end, masks on the
scans' own grid, bad scans rejected without losing good ones, bad input exiting 2 with one line."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

TINY = ["-s", "data.synthetic={count: 6, size: 24, seed: 0}", "-s", "data.patch_size=[16,16,16]"]
TINY += ["-s", "model.channels=[4,8]", "-s", "model.strides=[2]", "-s", "model.num_res_units=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tujie_core import load_config, train_from_config
    from tujie_health.cli import bundled_config

    out = tmp_path_factory.mktemp("seg")
    overrides = [f"output_dir={out}", "trainer.max_epochs=6", "trainer.progress=none", "optimizer.lr=0.01"]
    overrides += [TINY[i + 1] for i in range(0, len(TINY), 2)]
    return train_from_config(load_config(bundled_config(), overrides)).run_dir


def test_train_make_volumes_evaluate_and_predict(tujie, tmp_path: Path, trained: Path) -> None:
    done = tujie("health", "make-volumes", str(tmp_path / "msd"), "--count", "3", "--size", "24", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "msd" / "imagesTr").glob("*.nii.gz"))) == 3

    done = tujie("health", "segment", "train", "--epochs", "1", *TINY, "-s", f"output_dir={tmp_path}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "val/dice" in done.stdout and "run folder" in done.stdout

    done = tujie("health", "segment", "evaluate", str(trained), str(tmp_path / "msd"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "eval/dice" in done.stdout

    scans = tmp_path / "scans"
    scans.mkdir()
    image = nib.load(tmp_path / "msd" / "imagesTr" / "synthetic-000.nii.gz")
    flipped = nib.Nifti1Image(np.asarray(image.dataobj)[:, :, :20], np.diag([-1.5, 1.0, 1.0, 1.0]))
    nib.save(flipped, str(scans / "odd-grid.nii.gz"))  # another spacing, orientation and shape than training
    nib.save(image, str(scans / "plain.nii.gz"))
    (scans / "broken.nii.gz").write_bytes(b"not a scan")
    done = tujie("health", "segment", "predict", str(trained), str(scans), str(tmp_path / "masks"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "segmented 2 scan(s)" in done.stdout and "broken.nii.gz" in done.stderr
    rows = list(csv.DictReader((tmp_path / "masks" / "segmentations.csv").open()))
    assert [r["file"] for r in rows] == ["odd-grid.nii.gz", "plain.nii.gz"]
    mask = nib.load(rows[0]["mask"])
    assert mask.shape == (24, 24, 20) and np.allclose(mask.affine, flipped.affine)  # the scan's own grid
    truth = np.asarray(nib.load(tmp_path / "msd" / "labelsTr" / "synthetic-000.nii.gz").dataobj)
    predicted = np.asarray(nib.load(rows[1]["mask"]).dataobj)
    overlap = 2 * ((predicted > 0) & (truth > 0)).sum() / ((predicted > 0).sum() + (truth > 0).sum())
    assert overlap > 0.5 and int(rows[1]["voxels_foreground"]) == int((predicted == 1).sum())
    rejects = (tmp_path / "masks" / "segmentations.csv.rejects.csv").read_text()
    assert "broken.nii.gz" in rejects and "cannot read image" in rejects

    done = tujie("health", "segment", "export", str(trained), str(tmp_path / "bundle"), cwd=tmp_path)
    assert done.returncode == 0 and "python -m monai.bundle run" in done.stdout, done.stderr
    assert (tmp_path / "bundle" / "models" / "model.pt").is_file()


def test_bad_input_exits_2_with_one_line(tujie, tmp_path: Path, trained: Path) -> None:
    (tmp_path / "empty").mkdir()
    cases = [
        (("segment", "train", "--data", str(tmp_path / "nothing")), "nothing: not a dataset.json"),
        (("segment", "train", "--model", "monai/UNet3"), "no network 'UNet3'"),
        (("segment", "evaluate", str(tmp_path), str(tmp_path)), "not a finished segmentation run"),
        (("segment", "predict", str(trained), str(tmp_path / "none"), str(tmp_path / "o")), "none: no such file"),
        (("segment", "evaluate", str(trained), str(tmp_path / "empty")), "expected images/ and labels/"),
    ]
    for args, message in cases:
        extra = ["-s", f"output_dir={tmp_path}"] if args[1] == "train" else []
        done = tujie("health", *args, *extra, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
