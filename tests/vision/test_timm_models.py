"""timm architectures through the core model registry (``timm/<arch>``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tujie_core import ConfigError, create_model, train_from_config
from tujie_core.runs import parse_config


@pytest.mark.parametrize(
    ("arch", "options", "shape"),
    [
        ("resnet10t", {}, (1, 8, 8)),
        ("mobilenetv3_small_050", {}, (3, 32, 32)),
        ("vit_tiny_patch16_224", {"patch_size": 8, "depth": 2}, (3, 32, 32)),  # img_size from the data
    ],
)
def test_timm_models_come_from_the_core_registry(arch: str, options: dict, shape: tuple) -> None:
    model = create_model(f"timm/{arch}", input_shape=shape, num_outputs=7, **options)
    assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_bad_timm_names_and_options_are_one_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"no architecture 'resnet1000'.*did you mean"):
        create_model("timm/resnet1000", input_shape=(3, 32, 32), num_outputs=2)
    with pytest.raises(ConfigError, match="not downloaded"):
        create_model("timm/resnet18", input_shape=(3, 32, 32), num_outputs=2, pretrained=True)
    with pytest.raises(ConfigError, match=r"timm/<name>"):
        create_model("tim/resnet18", input_shape=(3, 32, 32), num_outputs=2)


def test_a_run_config_trains_a_timm_model(tmp_path: Path) -> None:
    config = parse_config(
        {
            "name": "timm-digits",
            "output_dir": str(tmp_path),
            "data": {"name": "digits", "batch_size": 64, "as_image": True},
            "model": {"name": "timm/resnet10t"},
            "trainer": {"max_epochs": 1, "progress": "none"},
        }
    )
    result = train_from_config(config)
    assert 0 <= result.metrics["test/accuracy"] <= 1 and (result.run_dir / "model" / "model.safetensors").is_file()
