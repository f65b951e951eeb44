"""Every timm architecture in the core model registry under the ``timm/`` prefix.

>>> create_model("timm/resnet18", input_shape=(3, 32, 32), num_outputs=43)      # doctest: +SKIP

A run config names them like any core model (``model: {name: timm/vit_tiny_patch16_224, img_size: 32}``); extra
options go to ``timm.create_model``. Offline: weights are never downloaded (``pretrained`` is always off here;
transfer learning starts from local checkpoints).
"""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from tujie_core import ConfigError
from tujie_core.registry import suggest

IMAGE_SIZED = ("vit", "deit", "swin", "eva", "beit", "cait", "xcit")  # families whose positional grid needs img_size


def timm_model(arch: str, input_shape: tuple[int, ...], num_outputs: int, **options: Any) -> nn.Module:
    """A timm model ``arch`` for ``(C, H, W)`` inputs and ``num_outputs`` classes, randomly initialised."""
    if not timm.is_model(arch):
        names = timm.list_models()
        raise ConfigError(f"model: timm has no architecture '{arch}'{suggest(arch, names)}")
    if len(input_shape) != 3:
        raise ConfigError(f"model timm/{arch}: needs (channels, height, width) inputs, got {tuple(input_shape)}")
    if options.pop("pretrained", False):
        raise ConfigError(f"model timm/{arch}: pretrained weights are not downloaded; start from a local checkpoint")
    if arch.startswith(IMAGE_SIZED):
        options.setdefault("img_size", tuple(input_shape[1:]))
    try:
        return timm.create_model(arch, pretrained=False, num_classes=num_outputs, in_chans=input_shape[0], **options)
    except TypeError as exc:
        raise ConfigError(f"model timm/{arch}: {exc}") from None


timm_model.tujie_namespace = True  # type: ignore[attr-defined]  # the entry point serves "timm/<arch>"
