"""A segmentation run exported as a MONAI Bundle runs under ``python -m monai.bundle run`` on a new scan and gives
the mask tujie's own Segmenter gives, on the scan's grid, through the run's orientation and spacing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tujie_core import DataError, RunConfig, train_from_config
from tujie_health.imaging import Segmenter, Synthetic, write_synthetic
from tujie_health.imaging.bundle import export_bundle


def test_the_exported_bundle_runs_under_monai_and_matches_the_segmenter(tmp_path: Path) -> None:
    data = write_synthetic(tmp_path / "msd", Synthetic(count=4, size=24, objects=4))
    config = {
        "name": "seg",
        "output_dir": str(tmp_path / "runs"),
        "data": {
            "name": "volumes",
            "source": str(data),
            "patch_size": [16, 16, 16],
            "spacing": [1.5, 1.5, 1.5],
            "orientation": "RAS",
            "batch_size": 2,
            "eval_batch_size": 1,
        },
        "model": {"name": "monai/UNet", "channels": [4, 8], "strides": [2], "num_res_units": 1},
        "optimizer": {"name": "adam", "lr": 0.01},
        "trainer": {"max_epochs": 3, "progress": "none"},
    }
    run = train_from_config(RunConfig.model_validate(config)).run_dir
    bundle = export_bundle(run, tmp_path / "bundle")
    assert {p.name for p in (tmp_path / "bundle" / "configs").iterdir()} == {"inference.json", "metadata.json"}

    source = nib.load(data / "imagesTr" / "synthetic-002.nii.gz")  # another orientation and spacing than training
    scan = nib.Nifti1Image(np.asarray(source.dataobj), np.diag([-1.0, 0.8, 1.2, 1.0]))
    nib.save(scan, str(tmp_path / "new.nii.gz"))
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle.inference)]
    command += ["--meta_file", str(bundle.metadata), "--bundle_root", str(tmp_path / "bundle")]
    command += ["--input", str(tmp_path / "new.nii.gz"), "--output_dir", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    written = nib.load(tmp_path / "out" / "new" / "new_seg.nii.gz")
    assert written.shape == scan.shape and np.allclose(written.affine, scan.affine)
    ours = Segmenter.load(run).predict(str(tmp_path / "new.nii.gz")).mask
    agreement = (np.asarray(written.dataobj) == ours).mean()
    assert agreement > 0.97 and (ours > 0).any(), agreement


def test_runs_a_bundle_cannot_express_are_refused(tmp_path: Path) -> None:
    pytest.importorskip("tujie_privacy")
    config = {
        "name": "dp",
        "output_dir": str(tmp_path),
        "data": {"name": "volumes", "synthetic": {"count": 4, "size": 24}, "patch_size": [16, 16, 16]},
    }
    config["data"] |= {"samples_per_volume": 1, "batch_size": 2, "eval_batch_size": 1}
    config["model"] = {"name": "monai/UNet", "channels": [4, 8], "strides": [2]}
    config["plugins"] = [{"name": "dp", "epsilon": 8.0}]
    config["trainer"] = {"max_epochs": 1, "progress": "none"}
    run = train_from_config(RunConfig.model_validate(config)).run_dir
    with pytest.raises(DataError, match="trained with plugins"):
        export_bundle(run, tmp_path / "bundle")
