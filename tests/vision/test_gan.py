"""The conditional DCGAN run: trains, resumes exactly, samples a chosen class into an images folder that a
classifier's data can add to its training split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tujie_core import DATASETS, ConfigError, DataError, train_from_config
from tujie_core.runs import parse_config
from tujie_vision.gan import ConditionalGAN


def _config(tmp_path: Path, **extra):
    return parse_config(
        {
            "kind": "gan",
            "name": "gan",
            "output_dir": str(tmp_path),
            "epochs": 2,
            "width": 8,
            "latent_dim": 8,
            "data": {"name": "images", "image_size": 8, "batch_size": 128},
            **extra,
        }
    )


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    return train_from_config(_config(tmp_path_factory.mktemp("gan")))


def test_a_gan_run_writes_a_generator_samples_and_a_report(gan_run) -> None:
    run = gan_run.run_dir
    assert {"train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"} == set(gan_run.metrics)
    assert (run / "model" / "generator.safetensors").is_file() and (run / "plots" / "samples.png").is_file()
    assert "![Samples](plots/samples.png)" in gan_run.report.read_text()
    gan = ConditionalGAN.load(run)
    images = gan.sample("3", 5, seed=1)
    assert images.shape == (5, 8, 8, 1) and images.dtype == np.uint8 and images.std() > 0
    assert np.array_equal(images, gan.sample("3", 5, seed=1))  # seeded
    with pytest.raises(DataError, match="class 'cat' is not one of the GAN's"):
        gan.sample("cat", 1)


def test_samples_augment_a_rare_class(gan_run, tmp_path: Path) -> None:
    folder = ConditionalGAN.load(gan_run.run_dir).save_samples(tmp_path / "synthetic", {"8": 30})
    assert len(list((folder / "8").glob("*.png"))) == 30
    rare = DATASETS.create("images", per_class={"8": 5})
    augmented = DATASETS.create("images", per_class={"8": 5}, extra_train=folder)
    assert np.bincount(rare.train.targets)[8] == 5 and np.bincount(augmented.train.targets)[8] == 35
    assert len(augmented.train) == len(rare.train) + 30 and len(augmented.test) == len(rare.test)
    with pytest.raises(DataError, match="per_class names classes not in the data"):
        DATASETS.create("images", per_class={"eleven": 5})


def test_a_gan_run_resumes_exactly(tmp_path: Path) -> None:
    whole = train_from_config(_config(tmp_path / "whole"))
    part = train_from_config(_config(tmp_path / "part", epochs=1))
    resumed = train_from_config(_config(tmp_path / "part"), resume=part.run_dir)
    a = load_file(str(whole.run_dir / "model" / "generator.safetensors"))
    b = load_file(str(resumed.run_dir / "model" / "generator.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gan_configs_fail_with_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="power of two from 8 to 128, got 12"):
        train_from_config(_config(tmp_path, data={"name": "images", "image_size": 12}))
    with pytest.raises(ConfigError, match="take no plugins"):
        _config(tmp_path, plugins=[{"name": "dp"}])


def test_gan_cli(tujie, gan_run, tmp_path: Path) -> None:
    done = tujie(
        "vision",
        "gan",
        "sample",
        str(gan_run.run_dir),
        str(tmp_path / "s"),
        "--class",
        "1",
        "--class",
        "7",
        "--count",
        "3",
        cwd=tmp_path,
    )
    assert done.returncode == 0 and len(list((tmp_path / "s").rglob("*.png"))) == 6
    bad = tujie(
        "vision", "gan", "train", "--data", str(tmp_path / "nowhere"), "-s", f"output_dir={tmp_path}", cwd=tmp_path
    )
    assert bad.returncode == 2 and "nowhere: no such file or folder" in bad.stderr
    trained = tujie(
        "vision", "gan", "train", "--image-size", "8", "--epochs", "1", "-s", "width=8", "-s", f"output_dir={tmp_path}",
        cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    (run,) = (tmp_path / "digits-gan").iterdir()
    assert (run / "model" / "generator.safetensors").is_file() and (run / "plots" / "samples.png").is_file()
