"""Virtual-screening metrics: how early a model ranks the known actives of a validation library.

>>> metrics = screening_metrics(scores, actives)     # higher score = more likely active
>>> metrics["ef_1%"], metrics["bedroc"], metrics["roc_auc"]

Molecules are ranked by score, highest first; tied scores keep their input order, so every metric is a function of
one deterministic ranking (as in RDKit, a tie is not split: ``roc_auc`` counts a tied active listed before an
inactive as ranked above it, where scikit-learn's ``roc_auc_score`` would give half a point).

- ``ef_x%``: the enrichment factor EF(x) = (a / n) / (A / N), with ``a`` actives among the top ``n = ceil(x·N)``
  molecules, ``A`` actives among ``N``: the hit rate of the top x% over the library's, at most
  ``min(N / n, N / A)`` (≈ ``min(1/x, N/A)``). RDKit's ``CalcEnrichment`` uses the same definition, but
  takes ``ceil`` of a float product (0.07 · 100 = 7.000000000000001 → a top 8) and returns nothing for x = 1, so EF
  is counted here; the tests check it against RDKit.
- ``bedroc``: Truchon & Bayly's BEDROC (J. Chem. Inf. Model. 47, 488, 2007), RDKit's ``CalcBEDROC``: the RIE with
  exponential weight ``alpha`` (20: 80% of the score from the top 8% of the ranking) scaled to 0 (actives last) …
  1 (actives first).
- ``roc_auc``: RDKit's ``CalcAUC``, the fraction of (active, inactive) pairs ranked in the right order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from rdkit.ML.Scoring import Scoring

from tujie_core import DataError


def screening_metrics(
    scores: Sequence[float] | np.ndarray,
    actives: Sequence[int | bool] | np.ndarray,
    *,
    fractions: Sequence[float] = (0.01, 0.05),
    alpha: float = 20.0,
) -> dict[str, float]:
    """``ef_<100·x>%`` per fraction x (0.01 → ``ef_1%``, 0.005 → ``ef_0.5%``), ``bedroc``, ``roc_auc``, and the
    ``actives`` and ``molecules`` counts; see the module docstring for the conventions."""
    labels = _labels(actives)
    values = _scores(scores, len(labels))
    num_actives = int(labels.sum())
    if num_actives in (0, len(labels)):
        raise DataError(
            f"screening metrics needs at least one active and one inactive, got {num_actives} actives "
            f"among {len(labels)} molecules"
        )
    if not alpha > 0:
        raise DataError(f"alpha must be positive, got {alpha}")
    ranked = labels[np.argsort(-values, kind="stable")]  # stable: ties keep their input order
    hits = np.cumsum(ranked)
    metrics: dict[str, float] = {}
    for fraction in fractions:
        if not 0 < fraction <= 1:
            raise DataError(f"fractions must lie in (0, 1], got {fraction}")
        top = math.ceil(round(fraction * len(ranked), 9))  # round: 0.07 · 100 is a top 7, not 8
        metrics[f"ef_{round(100 * fraction, 6):g}%"] = float(hits[top - 1] / top * len(ranked) / num_actives)
    rows = ranked[:, None]  # RDKit's layout: one row per molecule, best first, the label in column 0
    metrics["bedroc"] = float(Scoring.CalcBEDROC(rows, 0, alpha))
    metrics["roc_auc"] = float(Scoring.CalcAUC(rows, 0))
    metrics["actives"] = num_actives
    metrics["molecules"] = len(ranked)
    return metrics


def _labels(actives: Sequence[int | bool] | np.ndarray) -> np.ndarray:
    labels = np.asarray(actives)
    if labels.ndim != 1:
        raise DataError(f"actives must be one label per molecule, got shape {labels.shape}")
    if labels.dtype == bool:
        return labels
    known = np.isin(labels, (0, 1))
    if not known.all():
        index = int(np.flatnonzero(~known)[0])
        raise DataError(f"actives must be 0/1 or bool, got {labels[index].item()!r} at index {index}")
    return labels.astype(bool)


def _scores(scores: Sequence[float] | np.ndarray, count: int) -> np.ndarray:
    try:
        values = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("scores must be numbers") from None
    if values.ndim != 1:
        raise DataError(f"scores must be one number per molecule, got shape {values.shape}")
    if len(values) != count:
        raise DataError(f"scores has {len(values)} values but actives has {count}")
    missing = np.flatnonzero(np.isnan(values))
    if len(missing):
        raise DataError(f"scores[{missing[0]}] is NaN ({len(missing)} NaN scores)")
    return values
