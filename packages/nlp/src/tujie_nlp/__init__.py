"""tujie NLP: fine-tune BERT-family encoders on domain text with the tujie core trainer, offline by default.

>>> from tujie_nlp import TextClassifier, read_texts
>>> clf = TextClassifier.from_encoder("minilm-l6", labels=["negative", "positive"])   # doctest: +SKIP

Names are imported on first use, so ``tujie --help`` does not pay for transformers and captum.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "TextClassifier": "classifier",
    "compress_text": "compress",
    "BadRow": "data",
    "LabelVocab": "data",
    "TextTable": "data",
    "read_texts": "data",
    "DEFAULT_ENCODER": "encoders",
    "ENCODERS": "encoders",
    "resolve_encoder": "encoders",
    "Explanation": "explain",
    "explain": "explain",
    "plot_explanation": "explain",
    "pretrain_mlm": "pretrain",
    "TextClassificationRun": "run",
    "TextRunConfig": "run",
    "evaluate_text": "run",
    "load_text_config": "run",
    "predict_file": "run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tujie_nlp' has no attribute '{name}'")
    return getattr(importlib.import_module(f"tujie_nlp.{_EXPORTS[name]}"), name)
