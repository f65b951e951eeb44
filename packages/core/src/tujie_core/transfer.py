"""Transfer learning (book ch. 14.3.1) for any supervised run: start from local weights, train the head with the
backbone frozen, then unfreeze it at a lower learning rate.

>>> report = load_matching(model, "runs/pretrain/20261203-101500")   # doctest: +SKIP
>>> report.loaded, report.skipped                                     # doctest: +SKIP
(60, ['fc.weight', 'fc.bias'])

``source`` is a run folder (its ``model/``), a ``save_pretrained`` folder, a ``.safetensors`` file or a torch
state-dict file (``.pt``/``.pth``/``.bin``, read with ``weights_only=True``: never unpickled). Tensors whose name
and shape match are copied; the rest (a head sized for other classes) keep their fresh initialisation. Nothing is
downloaded.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from tujie_core.callbacks import Callback
from tujie_core.errors import ConfigError
from tujie_core.loop import Loop
from tujie_core.pretrained import WEIGHTS_NAME

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


@dataclass
class TransferReport:
    """What :func:`load_matching` did: tensors copied, tensors of the model left as initialised (with why)."""

    source: Path
    loaded: int
    skipped: list[str] = field(default_factory=list)  # in the model, but missing or shaped differently in source

    def summary(self) -> dict[str, object]:
        return {"init": str(self.source), "loaded": self.loaded, "kept_fresh": self.skipped}

    def describe(self) -> str:
        kept = f"; kept fresh: {', '.join(self.skipped[:6])}{' …' if len(self.skipped) > 6 else ''}"
        return f"{self.loaded} tensors loaded from `{self.source}`" + (kept if self.skipped else "")


def weights_file(source: str | Path) -> Path:
    """The weights file a transfer source names (run folder → ``model/model.safetensors``)."""
    source = Path(source)
    for candidate in (source / "model" / WEIGHTS_NAME, source / WEIGHTS_NAME, source):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"transfer.init: {source}: no weights there (a run folder, a model folder or a weights file)")


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a safetensors file or a torch state dict (``weights_only``; a Lightning/tujie checkpoint's
    ``model`` or ``state_dict`` entry is used when present)."""
    try:
        if path.suffix.lower() in TORCH_SUFFIXES:
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            state = load_file(str(path))
    except (SafetensorError, RuntimeError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise ConfigError(f"transfer.init: {path}: cannot read weights ({str(exc).splitlines()[0]})") from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"transfer.init: {path}: not a state dict of tensors")
    return {k.removeprefix("_forward_module.").removeprefix("module."): v for k, v in state.items()}


def load_matching(model: nn.Module, source: str | Path) -> TransferReport:
    """Copy into ``model`` every tensor of ``source`` whose name and shape match; see the module doc."""
    path = weights_file(source)
    state = read_state_dict(path)
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k in matched for k, _ in model.named_parameters()):
        raise ConfigError(
            f"transfer.init: {path}: no parameter fits this model (is it the same architecture?); "
            f"first names there: {', '.join(list(state)[:3])}"
        )
    model.load_state_dict(matched, strict=False)
    return TransferReport(path, len(matched), [k for k in own if k not in matched])


def head_parameters(model: nn.Module, head: str | None = None) -> set[str]:
    """Names of the head's parameters: module ``head`` if given, else timm's ``get_classifier()``, else the last
    module that holds parameters (the final Linear of a Sequential)."""
    modules = dict(model.named_modules())
    if head is not None:
        if head not in modules:
            raise ConfigError(f"transfer.head: the model has no module '{head}'")
        name = head
    elif hasattr(model, "get_classifier") and isinstance(model.get_classifier(), nn.Module):
        target = model.get_classifier()
        name = next(n for n, m in modules.items() if m is target)
    else:
        name = [n for n, m in modules.items() if n and any(True for _ in m.parameters(recurse=False))][-1]
    prefix = f"{name}." if name else ""
    names = {n for n, _ in model.named_parameters() if n.startswith(prefix)}
    if not names:
        raise ConfigError(f"transfer.head: module '{name}' has no parameters")
    return names


class FreezeBackbone(Callback):
    """Keeps every parameter outside the head frozen for the first ``epochs`` epochs, then trains them too.

    The state follows the epoch counter, so a resumed run freezes exactly as the uninterrupted one. The optimizer
    holds every parameter from the start (a frozen one gets no gradient and so no update, weight decay included).
    """

    def __init__(self, backbone: Iterable[nn.Parameter], epochs: int) -> None:
        self.backbone = list(backbone)
        self.epochs = epochs

    def on_fit_start(self, trainer: Loop) -> None:
        self.on_train_epoch_start(trainer)

    def on_train_epoch_start(self, trainer: Loop) -> None:
        frozen = trainer.state.epoch < self.epochs
        for param in self.backbone:
            param.requires_grad_(not frozen)

    def on_fit_end(self, trainer: Loop) -> None:
        for param in self.backbone:
            param.requires_grad_(True)
