"""Save and load trained models as folders: ``config.json`` beside ``model.safetensors`` (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from tujie_core.callbacks import PLUGINS
from tujie_core.errors import DataError
from tujie_core.models import create_model

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_pretrained(directory: str | Path, model: nn.Module, model_config: dict[str, Any], **metadata: Any) -> Path:
    """Write ``model``'s weights and the registry spec that rebuilds it (``{"name": ..., **kwargs}``).

    ``metadata`` (class names, task kind, ...) is stored beside it for loaders and apps; ``plugins`` (a list of
    ``{"name": ..., **options}``) are the plugins whose ``prepare_model`` shaped the model, applied again on load.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state, seen = {}, set()
    for key, value in model.state_dict().items():  # aliases (Opacus' DPLSTM names each weight twice) become copies
        tensor = value.detach().contiguous().cpu()
        pointer = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        state[key] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    save_file(state, str(directory / WEIGHTS_NAME))
    config = {"model": model_config, **metadata}
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2), encoding="utf-8")
    return directory


def load_pretrained(directory: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_pretrained`; returns ``(model, config)``."""
    directory = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise DataError(f"{directory}: missing {name} (not a folder written by save_pretrained)")
    config = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
    spec = dict(config["model"])
    model = create_model(spec.pop("name"), **spec)
    for plugin in config.get("plugins", []):  # the architecture it trained with (DP-SGD: DPLSTM for LSTM)
        options = dict(plugin)
        model = PLUGINS.create(options.pop("name"), where="plugins", **options).prepare_model(model)
    model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
    return model.eval(), config
