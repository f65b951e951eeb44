"""A classical baseline beside every fine-tune (book ch. 12: choose a model by evaluation, cheapest first).

TF-IDF over word 1–2-grams and character 2–5-grams (inside word boundaries), sublinear term frequency, then a
linear model: logistic regression (one-vs-rest for multi-label), its regularisation C chosen on the validation
split. It fits in seconds on CPU and often sits within a few points of a transformer (on long documents it can
beat one that reads only the first 128 tokens). Saved as JSON + safetensors (vocabularies, idf, weights), never
pickled, so loading a baseline runs no code from the file.

>>> baseline = TextBaseline.fit(train_table, val_table, labels)     # doctest: +SKIP
>>> baseline.predict(["the printer is on fire"])                    # doctest: +SKIP
[['hardware']]
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from tujie_core import DataError
from tujie_nlp.data import LabelVocab, TextTable

C_GRID = (0.25, 1.0, 4.0, 16.0)
ANALYZERS = {
    "word": {"analyzer": "word", "ngram_range": (1, 2)},
    "char": {"analyzer": "char_wb", "ngram_range": (2, 5)},
}
MAX_FEATURES = 200_000  # per analyzer: bounds memory on big corpora
CONFIG_NAME = "baseline.json"
WEIGHTS_NAME = "baseline.safetensors"
PAIR_SEPARATOR = " [SEP] "


def joined(texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[str]:
    """One string per row: a pair's two texts joined by a separator the word analyzer sees as a token."""
    return list(texts) if pairs is None else [f"{a}{PAIR_SEPARATOR}{b}" for a, b in zip(texts, pairs, strict=True)]


def _vectorizer(name: str, vocabulary: dict[str, int] | None = None, min_df: int = 1) -> TfidfVectorizer:
    return TfidfVectorizer(
        **ANALYZERS[name],
        sublinear_tf=True,
        lowercase=True,
        min_df=min_df,
        max_features=None if vocabulary is not None else MAX_FEATURES,
        vocabulary=vocabulary,
        dtype=np.float32,
    )


class TextBaseline:
    """Fitted TF-IDF vectorizers and linear weights over the classifier's labels (see the module doc)."""

    def __init__(
        self,
        labels: LabelVocab,
        vectorizers: dict[str, TfidfVectorizer],
        coef: np.ndarray,
        intercept: np.ndarray,
        info: dict[str, Any],
    ) -> None:
        self.labels = labels
        self.vectorizers = vectorizers
        self.coef = coef  # (labels, features)
        self.intercept = intercept  # (labels,)
        self.info = info  # C, how it was chosen, fit seconds, feature counts

    # ---- fitting ---------------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, train: TextTable, val: TextTable | None, labels: LabelVocab, seed: int = 0) -> TextBaseline:
        """Fit on ``train``; C from :data:`C_GRID` by the validation split's accuracy (micro-F1 for multi-label),
        C = 1 when there is no validation split."""
        if train.labels is None or not len(train):
            raise DataError("the baseline needs labelled training rows")
        started = time.perf_counter()
        min_df = 2 if len(train) >= 1000 else 1
        vectorizers = {name: _vectorizer(name, min_df=min_df) for name in ANALYZERS}
        texts = joined(train.texts, train.pairs)
        x = sparse.hstack([v.fit_transform(texts) for v in vectorizers.values()]).tocsr()
        y = _targets(labels, train.labels)
        has_val = val is not None and val.labels is not None and len(val) > 0
        grid = C_GRID if has_val else (1.0,)
        best: tuple[float, float, np.ndarray, np.ndarray] | None = None
        for c in grid:
            coef, intercept = _fit_linear(x, y, labels, c, seed)
            candidate = cls(labels, vectorizers, coef, intercept, {})
            score = candidate._selection_score(val) if has_val else 0.0  # type: ignore[arg-type]
            if best is None or score > best[0]:
                best = (score, c, coef, intercept)
        assert best is not None
        info = {
            "C": best[1],
            "chosen_by": "validation accuracy" if has_val else "default (no validation split)",
            "validation_score": best[0] if has_val else None,
            "features": {name: len(v.vocabulary_) for name, v in vectorizers.items()},
            "fit_seconds": time.perf_counter() - started,
            "training_rows": len(train),
        }
        return cls(labels, vectorizers, best[2], best[3], info)

    def _selection_score(self, table: TextTable) -> float:
        assert table.labels is not None
        y = _targets(self.labels, table.labels)
        predicted = self._decide(self.decision_function(table.texts, table.pairs))
        if self.labels.multi_label:
            return float(f1_score(y, predicted, average="micro", zero_division=0))
        return float(accuracy_score(y, predicted))

    # ---- inference -------------------------------------------------------------------------------------------------
    def features(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> sparse.csr_matrix:
        rows = joined(texts, pairs)
        return sparse.hstack([v.transform(rows) for v in self.vectorizers.values()]).tocsr()

    def decision_function(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> np.ndarray:
        """Logits ``(n, labels)``: softmax for one label per row, a sigmoid per label for multi-label."""
        return np.asarray(self.features(texts, pairs) @ self.coef.T) + self.intercept

    def probabilities(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> np.ndarray:
        logits = self.decision_function(texts, pairs)
        if self.labels.multi_label:
            return 1 / (1 + np.exp(-logits))
        shifted = np.exp(logits - logits.max(1, keepdims=True))
        return shifted / shifted.sum(1, keepdims=True)

    def _decide(self, logits: np.ndarray) -> np.ndarray:
        return (logits > 0).astype(int) if self.labels.multi_label else logits.argmax(1)

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[list[str]]:
        """The label(s) of each row."""
        decided = self._decide(self.decision_function(texts, pairs))
        if self.labels.multi_label:
            return [[n for n, on in zip(self.labels.names, row, strict=True) if on] for row in decided]
        return [[self.labels.names[i]] for i in decided]

    def scores(self, table: TextTable) -> dict[str, float]:
        """Accuracy and macro-F1 on a labelled table (the names the fine-tune's metrics use)."""
        assert table.labels is not None
        y = _targets(self.labels, table.labels)
        predicted = self._decide(self.decision_function(table.texts, table.pairs))
        return {
            "accuracy": float(accuracy_score(y, predicted) if not self.labels.multi_label else (y == predicted).mean()),
            "f1_macro": float(f1_score(y, predicted, average="macro", zero_division=0)),
        }

    # ---- persistence -----------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"coef": self.coef.astype(np.float32), "intercept": self.intercept.astype(np.float32)}
        tensors |= {f"idf.{name}": v.idf_.astype(np.float32) for name, v in self.vectorizers.items()}
        save_file(tensors, str(directory / WEIGHTS_NAME))
        config = {
            "labels": self.labels.names,
            "multi_label": self.labels.multi_label,
            "vocabularies": {
                name: {t: int(i) for t, i in v.vocabulary_.items()} for name, v in self.vectorizers.items()
            },
            "info": self.info,
        }
        (directory / CONFIG_NAME).write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TextBaseline:
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file():
            raise DataError(f"{directory}: no baseline ({CONFIG_NAME}); train one with `tujie nlp train`")
        config = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
        tensors = load_file(str(directory / WEIGHTS_NAME))
        vectorizers = {}
        for name, vocabulary in config["vocabularies"].items():
            vectorizer = _vectorizer(name, vocabulary)
            vectorizer.idf_ = tensors[f"idf.{name}"]
            vectorizers[name] = vectorizer
        labels = LabelVocab(config["labels"], config["multi_label"])
        return cls(labels, vectorizers, tensors["coef"], tensors["intercept"], config["info"])


def _targets(labels: LabelVocab, rows: Sequence[Sequence[str]]) -> np.ndarray:
    return labels.encode(rows).numpy().astype(int)


def _fit_linear(x: sparse.csr_matrix, y: np.ndarray, labels: LabelVocab, c: float, seed: int):
    """(coef (labels, features), intercept (labels,)) of logistic regression; one-vs-rest for multi-label."""
    if labels.multi_label:
        coefs, intercepts = [], []
        for j in range(y.shape[1]):
            column = y[:, j]
            if column.min() == column.max():  # a label always (or never) present: a constant decision
                coefs.append(np.zeros(x.shape[1], dtype=np.float32))
                intercepts.append(10.0 if column[0] else -10.0)
                continue
            model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x, column)
            coefs.append(model.coef_[0])
            intercepts.append(float(model.intercept_[0]))
        return np.stack(coefs).astype(np.float32), np.asarray(intercepts, dtype=np.float32)
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x, y)
    classes = model.classes_
    coef = np.zeros((len(labels), x.shape[1]), dtype=np.float32)
    intercept = np.full(len(labels), -1e4, dtype=np.float32)  # a class missing from these rows is never chosen
    if model.coef_.shape[0] == 1:  # two classes: sklearn keeps the second's logit against the first's zero
        coef[classes[1]], intercept[classes[1]], intercept[classes[0]] = model.coef_[0], model.intercept_[0], 0.0
    else:
        coef[classes], intercept[classes] = model.coef_, model.intercept_
    return coef, intercept
