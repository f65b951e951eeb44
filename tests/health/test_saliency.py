"""Saliency for one image: Grad-CAM and occlusion point at the region the model reads, not at an equally bright
region it ignores; the overlay is a picture of the image's shape."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tujie_core import ConfigError
from tujie_health.imaging.saliency import overlay, saliency


class ReadsTopLeft(nn.Module):
    """Sees only the top-left quadrant (masked before its convolution), scores 'lesion' by its brightness."""

    def __init__(self, binary: bool) -> None:
        super().__init__()
        mask = torch.zeros(1, 1, 16, 16)
        mask[..., :8, :8] = 1
        self.register_buffer("mask", mask)
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.ones_(self.conv.weight)
        self.head = nn.Linear(1, 1 if binary else 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.ones(1, 1) if binary else torch.tensor([[-1.0], [1.0]]))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x * self.mask).mean((2, 3)))


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
def test_saliency_points_at_what_the_model_reads(method: str, binary: bool) -> None:
    image = torch.zeros(1, 16, 16)
    image[0, 2:5, 2:5] = 1.0  # read by the model
    image[0, 11:14, 11:14] = 1.0  # just as bright, ignored
    heat = saliency(ReadsTopLeft(binary), image, method=method, mask_size=3)
    assert heat.shape == (16, 16) and heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    assert heat[2:5, 2:5].mean() > 0.5 and heat[11:14, 11:14].mean() < 0.1


def test_overlay_and_bad_requests() -> None:
    picture = overlay(torch.rand(1, 16, 16), torch.rand(16, 16).numpy(), scale=4)
    assert picture.size == (64, 64) and picture.mode == "RGB"
    with pytest.raises(ConfigError, match="no convolution"):
        saliency(nn.Sequential(nn.Flatten(), nn.Linear(256, 2)), torch.rand(1, 16, 16))
    with pytest.raises(ConfigError, match="one \\(C, H, W\\) image"):
        saliency(ReadsTopLeft(False), torch.rand(2, 1, 16, 16))
