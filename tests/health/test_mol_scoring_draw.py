"""Screening metrics against hand-computed values, and molecule pictures as PNGs."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image
from rdkit.ML.Scoring import Scoring

from tujie_core import DataError
from tujie_health.molecules.draw import draw_grid, draw_molecule
from tujie_health.molecules.scoring import screening_metrics

# 100 molecules, actives at ranks 1, 3, 10 and 50, listed in a shuffled order
ACTIVE_RANKS = (1, 3, 10, 50)
_ORDER = np.random.default_rng(0).permutation(100)
SCORES = (100 - np.arange(100, dtype=float))[_ORDER]  # rank r scores 101 - r
ACTIVES = np.isin(np.arange(100) + 1, ACTIVE_RANKS)[_ORDER]


def _bedroc_truchon_bayly(ranks: tuple[int, ...], n: int, alpha: float) -> float:
    """Eq. 36 of Truchon & Bayly (2007), written out independently of RDKit."""
    ra = len(ranks) / n
    rie = sum(math.exp(-alpha * r / n) for r in ranks) / (ra * (1 - math.exp(-alpha)) / (math.exp(alpha / n) - 1))
    scale = ra * math.sinh(alpha / 2) / (math.cosh(alpha / 2) - math.cosh(alpha / 2 - alpha * ra))
    return rie * scale + 1 / (1 - math.exp(alpha * (1 - ra)))


def test_metrics_match_hand_computed_values():
    metrics = screening_metrics(SCORES, ACTIVES, fractions=(0.005, 0.01, 0.05, 0.07, 0.1))
    assert metrics["ef_0.5%"] == pytest.approx(25.0)  # top 1 of 100 (ceil): 1 active / (4 / 100)
    assert metrics["ef_1%"] == pytest.approx(25.0)
    assert metrics["ef_5%"] == pytest.approx(10.0)  # 2 actives in the top 5: (2 / 5) / 0.04
    assert metrics["ef_7%"] == pytest.approx(2 / 7 / 0.04)  # a top 7 (RDKit's float ceil takes 8: 6.25)
    assert metrics["ef_10%"] == pytest.approx(7.5)
    # inactives ranked below each active: 96, 95, 89, 50 of 4 · 96 pairs
    assert metrics["roc_auc"] == pytest.approx(330 / 384)
    assert metrics["bedroc"] == pytest.approx(_bedroc_truchon_bayly(ACTIVE_RANKS, 100, 20.0))
    assert metrics["bedroc"] == pytest.approx(0.604265, abs=1e-6)
    assert (metrics["actives"], metrics["molecules"]) == (4, 100)
    assert list(metrics) == [
        "ef_0.5%",
        "ef_1%",
        "ef_5%",
        "ef_7%",
        "ef_10%",
        "bedroc",
        "roc_auc",
        "actives",
        "molecules",
    ]
    alpha_80 = screening_metrics(SCORES, ACTIVES, alpha=80.5)["bedroc"]
    assert alpha_80 == pytest.approx(_bedroc_truchon_bayly(ACTIVE_RANKS, 100, 80.5))


def test_enrichment_agrees_with_rdkit_where_its_ceil_is_exact():
    rng = np.random.default_rng(1)
    scores, actives = rng.normal(size=500), rng.random(500) < 0.1
    rows = actives[np.argsort(-scores, kind="stable")][:, None]
    expected = Scoring.CalcEnrichment(rows, 0, [0.01, 0.05, 0.1, 0.2])
    metrics = screening_metrics(scores, actives, fractions=(0.01, 0.05, 0.1, 0.2))
    assert [metrics[k] for k in ("ef_1%", "ef_5%", "ef_10%", "ef_20%")] == pytest.approx(expected)


# a perfect EF is min(top, A) / top · N / A for a top of ceil(x · N): min(1/x, N/A) where x · N is whole
@pytest.mark.parametrize(
    ("molecules", "actives", "ef_1", "ef_5"), [(100, 5, 20.0, 20.0), (1000, 5, 100.0, 20.0), (50, 10, 5.0, 5.0)]
)
def test_perfect_and_worst_rankings(molecules, actives, ef_1, ef_5):
    labels = np.arange(molecules) < actives
    scores = -np.arange(molecules, dtype=float)  # actives first
    best = screening_metrics(scores, labels)
    assert (best["ef_1%"], best["ef_5%"]) == (pytest.approx(ef_1), pytest.approx(ef_5))
    assert best["ef_1%"] == pytest.approx(min(1 / 0.01, molecules / actives))
    assert best["bedroc"] == pytest.approx(1.0)
    assert best["roc_auc"] == 1.0
    worst = screening_metrics(-scores, labels)
    assert (worst["ef_1%"], worst["roc_auc"]) == (0.0, 0.0)
    assert worst["bedroc"] == pytest.approx(0.0, abs=1e-9)


def test_ties_keep_input_order():
    metrics = screening_metrics([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], fractions=(0.25,))
    assert metrics["roc_auc"] == pytest.approx(0.25)  # ranked as listed: the active 2nd beats one inactive
    assert metrics["ef_25%"] == 0.0
    flipped = screening_metrics([0.5, 0.5, 0.5, 0.5], [True, False, True, False], fractions=(0.25,))
    assert (flipped["roc_auc"], flipped["ef_25%"]) == (pytest.approx(0.75), pytest.approx(2.0))


@pytest.mark.parametrize(
    ("scores", "actives", "kwargs", "message"),
    [
        ([0.1, 0.2, 0.3, float("nan")], [0, 1, 0, 1], {}, r"scores\[3\] is NaN"),
        ([0.1, 0.2, 0.3], [0, 1, 0, 1], {}, "scores has 3 values but actives has 4"),
        ([0.1, 0.2, 0.3], [0, 0, 0], {}, "needs at least one active and one inactive"),
        ([0.1, 0.2, 0.3], [True, True, True], {}, "needs at least one active and one inactive"),
        ([], [], {}, "needs at least one active and one inactive"),
        ([0.1, 0.2, 0.3], [0, 2, 1], {}, "actives must be 0/1 or bool, got 2 at index 1"),
        (["a", "b"], [0, 1], {}, "scores must be numbers"),
        ([0.1, 0.2], [0, 1], {"fractions": (0.0,)}, r"fractions must lie in \(0, 1\]"),
        ([0.1, 0.2], [0, 1], {"fractions": (1.5,)}, r"fractions must lie in \(0, 1\]"),
        ([0.1, 0.2], [0, 1], {"alpha": 0.0}, "alpha must be positive"),
    ],
)
def test_bad_input_raises_data_error(scores, actives, kwargs, message):
    with pytest.raises(DataError, match=message):
        screening_metrics(scores, actives, **kwargs)


def _pixels(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG")
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _reddish(pixels: np.ndarray) -> int:
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return int(((r > 200) & (g < 120) & (b < 120)).sum())


def _bluish(pixels: np.ndarray) -> int:
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return int(((b > 200) & (r < 120) & (g < 120)).sum())


ETHYLBENZENE = "c1ccccc1CC"  # carbons only: an unweighted drawing is black on white


def test_draw_molecule_png_and_size():
    pixels = _pixels(draw_molecule(ETHYLBENZENE))
    assert pixels.shape == (240, 300, 3)
    assert _reddish(pixels) == 0 and _bluish(pixels) == 0
    assert _pixels(draw_molecule("CCO", size=(120, 90))).shape == (90, 120, 3)
    assert not np.array_equal(_pixels(draw_molecule("CCO", legend="ethanol")), _pixels(draw_molecule("CCO")))


def test_atom_weights_colour_atoms_by_sign_and_magnitude():
    positive = _pixels(draw_molecule(ETHYLBENZENE, atom_weights=[1.0] * 8))
    negative = _pixels(draw_molecule(ETHYLBENZENE, atom_weights=[-1.0] * 8))
    assert _reddish(positive) > 1000 and _bluish(positive) == 0
    assert _bluish(negative) > 1000 and _reddish(negative) == 0
    # intensity ∝ |w| / max|w|: only the atom at the maximum is full red, and the scale of the weights is irrelevant
    one_strong = _pixels(draw_molecule(ETHYLBENZENE, atom_weights=[1.0] + [0.3] * 7))
    assert 0 < _reddish(one_strong) < _reddish(positive) / 4
    assert np.array_equal(_pixels(draw_molecule(ETHYLBENZENE, atom_weights=[5.0] * 8)), positive)
    # a heteroatom's label is not drawn in its element colour once weights are shown
    assert _reddish(_pixels(draw_molecule("CCO"))) > 0
    assert _reddish(_pixels(draw_molecule("CCO", atom_weights=[0.0, 0.0, 0.0]))) == 0


def test_draw_grid_panels():
    smiles = ["CCO", "c1ccccc1", "CC(=O)O", "CN", "C"]
    grid = _pixels(draw_grid(smiles, list("abcde"), per_row=3))
    assert grid.shape == (2 * 200, 3 * 250, 3)
    weighted = draw_grid(smiles[:2], ["x", "y"], atom_weights=[None, [1.0] * 6], size=(200, 150))
    pixels = _pixels(weighted)
    assert pixels.shape == (150, 2 * 200, 3)  # fewer molecules than per_row: one row, as wide as needed
    assert _reddish(pixels[:, :200]) == 0 and _reddish(pixels[:, 200:]) > 500


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: draw_molecule("C1CC"), "invalid SMILES 'C1CC'"),
        (lambda: draw_molecule(""), "empty SMILES"),
        (lambda: draw_molecule(ETHYLBENZENE, atom_weights=[1.0, 2.0, 3.0]), "3 weights for 8 atoms"),
        (lambda: draw_molecule("CC", atom_weights=[1.0, float("nan")]), "atom_weights must be finite"),
        (lambda: draw_molecule("CC", size=(0, 100)), "size must be a positive"),
        (lambda: draw_grid(["CC", "xyz"], ["a", "b"]), "invalid SMILES 'xyz'"),
        (lambda: draw_grid(["CC", "CO"], ["a"]), "legends has 1 entries for 2 smiles"),
        (lambda: draw_grid(["CC", "CO"], ["a", "b"], atom_weights=[None]), "atom_weights has 1 entries for 2 smiles"),
        (lambda: draw_grid(["CC", "CO"], ["a", "b"], atom_weights=[None, [1.0]]), "1 weights for 2 atoms"),
        (lambda: draw_grid([], []), "smiles must be a non-empty list"),
        (lambda: draw_grid(["CC"], ["a"], per_row=0), "per_row must be at least 1"),
    ],
)
def test_draw_errors(call, message):
    with pytest.raises(DataError, match=message):
        call()
