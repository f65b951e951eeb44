"""Every MONAI network in the core model registry under the ``monai/`` prefix.

>>> create_model("monai/UNet", input_shape=(1, 64, 64), num_outputs=2, channels=[8, 16], strides=[2])  # doctest: +SKIP

The run fills in what the data decides: ``spatial_dims`` (2 or 3, from the input shape), the input channels
(``in_channels`` or ``n_input_channels``), the outputs (``out_channels`` or ``num_classes``) and, for transformer
networks (UNETR, SwinUNETR, ViT), ``img_size`` from the training patch. Everything else goes to the network's
constructor. Offline: ``pretrained`` weights are refused (start from a local checkpoint with ``transfer:``).
"""

from __future__ import annotations

import inspect
from typing import Any

import monai.networks.nets as nets
from torch import nn

from tujie_core import ConfigError
from tujie_core.registry import suggest

IN_CHANNELS = ("in_channels", "n_input_channels")
OUT_CHANNELS = ("out_channels", "num_classes")


def network_class(arch: str) -> type[nn.Module]:
    """The class ``arch`` of ``monai.networks.nets``; ConfigError with a suggestion when there is none."""
    factory = getattr(nets, arch, None)
    if not (inspect.isclass(factory) and issubclass(factory, nn.Module)):
        names = sorted(n for n, obj in vars(nets).items() if inspect.isclass(obj) and issubclass(obj, nn.Module))
        raise ConfigError(f"model: monai.networks.nets has no network '{arch}'{suggest(arch, names)}")
    return factory


def network_arguments(arch: str, input_shape: tuple[int, ...], num_outputs: int, **options: Any) -> dict[str, Any]:
    """The constructor arguments of ``arch`` for this data: the run's (dimensions, channels, outputs, image size)
    and the config's ``options``."""
    if options.get("pretrained"):
        raise ConfigError(f"model monai/{arch}: pretrained weights are not downloaded; start from a local checkpoint")
    accepted = inspect.signature(network_class(arch)).parameters
    spatial = tuple(int(v) for v in input_shape[1:])
    filled: dict[str, Any] = {}
    if "spatial_dims" in accepted:
        filled["spatial_dims"] = len(spatial)
    if "img_size" in accepted:
        filled["img_size"] = list(spatial)
    for names, value in ((IN_CHANNELS, int(input_shape[0])), (OUT_CHANNELS, num_outputs)):
        name = next((n for n in names if n in accepted), None)
        if name is None:
            raise ConfigError(f"model monai/{arch}: takes none of {', '.join(names)}; it cannot be sized by the run")
        filled[name] = value
    clash = sorted(set(filled) & set(options))
    if clash:
        raise ConfigError(f"model.{clash[0]}: set by the run from the data; remove it from the config")
    return filled | options


def monai_model(arch: str, input_shape: tuple[int, ...], num_outputs: int, **options: Any) -> nn.Module:
    """MONAI network ``arch`` (a class of ``monai.networks.nets``) for ``(C, *spatial)`` inputs and
    ``num_outputs`` output channels or classes, randomly initialised."""
    arguments = network_arguments(arch, input_shape, num_outputs, **options)
    try:
        return network_class(arch)(**arguments)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"model monai/{arch}: {exc}") from None


monai_model.tujie_namespace = True  # type: ignore[attr-defined]  # the entry point serves "monai/<Network>"
