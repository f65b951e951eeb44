"""Encrypted batch prediction of a CSV/TSV of features through a :class:`ServiceClient`: streamed in batches of
the ciphertexts' slot count, bad rows skipped and reported, resumable (core's ``predict_stream``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tujie_core import DataError
from tujie_core.data import parse_float
from tujie_core.inference import (
    InferenceSummary,
    file_fingerprint,
    predict_stream,
    read_table_header,
    rejecting,
    table_records,
)
from tujie_core.progress import Mode
from tujie_privacy.he.client import ServiceClient


def feature_columns(path: Path, header: list[str], info: dict[str, Any]) -> list[str]:
    """The header's columns the model reads, in its order: its named features, else every column."""
    names: list[str] = info.get("feature_names") or []
    if names and all(n in header for n in names):
        return names
    if len(header) == info["input_dim"]:
        return header
    hint = f" (named: {', '.join(names[:5])}{', …' if len(names) > 5 else ''})" if names else ""
    raise DataError(f"{path}: {len(header)} columns; the model takes {info['input_dim']} features{hint}")


def output_columns(info: dict[str, Any]) -> list[str]:
    classes = info.get("class_names") or []
    if info["output"] == "value":
        return ["prediction"] if info["output_dim"] == 1 else [f"prediction_{i}" for i in range(info["output_dim"])]
    if info["output"] == "logit":
        return ["label", f"p_{classes[1] if len(classes) == 2 else 1}"]
    names = classes if len(classes) == info["output_dim"] else [str(i) for i in range(info["output_dim"])]
    return ["label", *(f"p_{n}" for n in names)]


def decisions(outputs: np.ndarray, info: dict[str, Any]) -> list[list[str]]:
    """Output rows (label and probabilities, or values) from decrypted logits/values."""
    classes = info.get("class_names") or []
    if info["output"] == "value":
        return [[f"{v:.6g}" for v in row] for row in outputs]
    if info["output"] == "logit":
        names = classes if len(classes) == 2 else ["0", "1"]
        p = 1 / (1 + np.exp(-outputs[:, 0]))
        return [[names[int(q > 0.5)], f"{q:.6f}"] for q in p]
    names = classes if len(classes) == info["output_dim"] else [str(i) for i in range(info["output_dim"])]
    shifted = np.exp(outputs - outputs.max(1, keepdims=True))
    probs = shifted / shifted.sum(1, keepdims=True)
    return [[names[int(row.argmax())], *(f"{q:.6f}" for q in row)] for row in probs]


def predict_file(
    client: ServiceClient, path: str | Path, output: str | Path, *, resume: bool = True, progress: Mode = "none"
) -> InferenceSummary:
    """Encrypted predictions for every row of ``path`` into ``output``; rows with a missing or non-numeric value
    or the wrong field count go to ``output.rejects.csv`` with the reason, and the good rows still come out."""
    path = Path(path)
    header, _ = read_table_header(path)
    columns = feature_columns(path, header, client.info)

    def encode(record: dict[str, str]) -> np.ndarray:
        return np.array([parse_float(record[c].strip(), path, 0, c) for c in columns])

    def predict(items: list[np.ndarray]) -> list[list[str]]:
        return decisions(client.predict(np.stack(items)), client.info)

    return predict_stream(
        lambda: table_records(path),
        predict,
        output,
        header=output_columns(client.info),
        prepare=rejecting(encode, f"{path}: row 0, "),
        chunk_size=client.keys.slots,
        workers=1,
        job={"input": file_fingerprint(path), "model": client.info["name"], "function": client.info["function"]},
        resume=resume,
        progress=progress,
    )
