"""Where a classifier looked: Grad-CAM or occlusion sensitivity (MONAI's ``monai.visualize``) for one image, and
an overlay picture of it on the image.

>>> heat = saliency(model, image, method="gradcam")       # (H, W) in [0, 1], for the predicted class  # doctest: +SKIP
>>> overlay(image, heat).save("saliency.png")                                                        # doctest: +SKIP
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from matplotlib import colormaps
from monai.visualize import GradCAM, OcclusionSensitivity
from PIL import Image
from torch import Tensor, nn

from tujie_core import ConfigError

Method = Literal["gradcam", "occlusion"]


def last_conv_layer(model: nn.Module) -> str:
    """The name of the model's last convolution: Grad-CAM's default target layer."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d)]
    if not names:
        raise ConfigError("saliency: the model has no convolution for Grad-CAM; use method 'occlusion'")
    return names[-1]


def _logits_for(model: nn.Module, binary: bool) -> nn.Module:
    """Binary models give one logit; Grad-CAM and occlusion want one score per class: (−z, z)."""
    if not binary:
        return model

    class TwoClass(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: Tensor) -> Tensor:
            z = self.inner(x).reshape(len(x), 1)
            return torch.cat([-z, z], 1)

    return TwoClass()


def _unchanged(x: Tensor) -> Tensor:
    return x


def saliency(
    model: nn.Module,
    image: Tensor,
    *,
    target: int | None = None,
    method: Method = "gradcam",
    layer: str | None = None,
    mask_size: int | None = None,
) -> np.ndarray:
    """A ``(H, W)`` map in [0, 1] of how much each pixel of ``image`` (``(C, H, W)``) drives class ``target``
    (default: the predicted class). ``gradcam``: gradients at ``layer`` (default: the last convolution);
    ``occlusion``: the drop in the class probability when a ``mask_size`` patch is blurred out (any model)."""
    if image.ndim != 3:
        raise ConfigError(f"saliency: one (C, H, W) image, got shape {tuple(image.shape)}")
    was_training = model.training
    model.eval()
    x = image[None].float().to(next(model.parameters()).device).requires_grad_(method == "gradcam")
    with torch.no_grad():
        logits = model(x)
    binary = logits.reshape(1, -1).shape[1] == 1
    net = _logits_for(model, binary)
    if target is None:
        target = int(logits.reshape(-1)[0] > 0) if binary else int(logits.argmax(1))
    try:
        if method == "gradcam":
            inner = "inner." if binary else ""
            # MONAI's default post-processing maps (min, max) to (1, 0): keep the raw map, normalised below
            cam = GradCAM(net, target_layers=inner + (layer or last_conv_layer(model)), postprocessing=_unchanged)
            heat = cam(x, class_idx=target)[0, 0]
        elif method == "occlusion":
            size = mask_size or max(2, min(image.shape[1:]) // 7)
            occlusion = OcclusionSensitivity(net, mask_size=size, n_batch=32, verbose=False)
            sensitivity, _ = occlusion(x)
            heat = -sensitivity[0, target]  # a large drop in the class score = an important region
        else:
            raise ConfigError(f"saliency: method must be gradcam or occlusion, got {method!r}")
    finally:
        model.train(was_training)
    heat = heat.detach().float().cpu().numpy()
    span = float(heat.max() - heat.min())
    return (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)


def overlay(image: Tensor | np.ndarray, heat: np.ndarray, alpha: float = 0.45, scale: int = 8) -> Image.Image:
    """The image in grey with the map in a 'jet' colour wash over it, enlarged ``scale`` times (nearest)."""
    array = np.asarray(image.detach().cpu() if isinstance(image, Tensor) else image, dtype=np.float32)
    grey = array.mean(0) if array.ndim == 3 else array
    grey = (grey - grey.min()) / max(float(grey.max() - grey.min()), 1e-8)
    colour = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    mixed = (1 - alpha) * np.repeat(grey[..., None], 3, axis=2) + alpha * colour
    picture = Image.fromarray((mixed * 255).round().astype(np.uint8))
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
