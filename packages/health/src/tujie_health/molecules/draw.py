"""Molecule pictures as PNG bytes, optionally coloured by per-atom weights (attributions, contributions).

>>> png = draw_molecule("CCO", atom_weights=[0.2, -0.1, 0.9], legend="ethanol")
>>> grid = draw_grid(["CCO", "c1ccccc1"], ["0.93", "0.41"])    # top hits, four per row

RDKit's Cairo renderer draws them, headless and without matplotlib. A weight ``w`` fills a disc on its atom, red for
``w > 0`` and blue for ``w < 0``, blended from white to full colour by ``|w| / max|w|`` over the molecule; bonds are
not highlighted, and a picture with weights (a grid with any) draws element labels in black so that red O and blue N
cannot pass for weights. Highlights, rather than RDKit's ``SimilarityMaps.GetSimilarityMapFromWeights``, because that
draws a Gaussian contour map of one molecule (no legend, no grid panels, at least two atoms, pink/green unless given
a colour map) and imports matplotlib when it is installed; highlights give each atom exactly its colour, in a grid
too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from rdkit import Chem
from rdkit.Chem.Draw import rdMolDraw2D

from tujie_core import DataError
from tujie_health.molecules.featurize import parse_smiles

HIGHLIGHT_RADIUS = 0.4  # disc radius in depiction coordinates, where a bond is 1.5 (RDKit draws 0.3)


def draw_molecule(
    smiles: str,
    *,
    atom_weights: Sequence[float] | None = None,
    size: tuple[int, int] = (300, 240),
    legend: str = "",
) -> bytes:
    """PNG of ``smiles`` at ``size`` (width, height) with ``legend`` below; ``atom_weights``: one per heavy atom, in
    the atom order of ``Chem.MolFromSmiles(smiles)``."""
    return _draw([smiles], [legend], [atom_weights], 1, size)


def draw_grid(
    smiles: Sequence[str],
    legends: Sequence[str],
    atom_weights: Sequence[Sequence[float] | None] | None = None,
    per_row: int = 4,
    size: tuple[int, int] = (250, 200),
) -> bytes:
    """PNG grid of ``smiles`` with their ``legends``, ``per_row`` panels of ``size`` a row; ``atom_weights``: one
    entry (a weight list or None) per molecule, as in :func:`draw_molecule`."""
    if isinstance(smiles, str) or not len(smiles):
        raise DataError("smiles must be a non-empty list of SMILES")
    if len(legends) != len(smiles):
        raise DataError(f"legends has {len(legends)} entries for {len(smiles)} smiles")
    if atom_weights is not None and len(atom_weights) != len(smiles):
        raise DataError(f"atom_weights has {len(atom_weights)} entries for {len(smiles)} smiles")
    if per_row < 1:
        raise DataError(f"per_row must be at least 1, got {per_row}")
    weights = [None] * len(smiles) if atom_weights is None else list(atom_weights)
    return _draw(list(smiles), list(legends), weights, per_row, size)


def _draw(
    smiles: list[str], legends: list[str], weights: list[Sequence[float] | None], per_row: int, size: tuple[int, int]
) -> bytes:
    width, height = size
    if width < 1 or height < 1:
        raise DataError(f"size must be a positive (width, height), got {size}")
    mols = [parse_smiles(text) for text in smiles]
    colours = [_atom_colours(mol, w) for mol, w in zip(mols, weights, strict=True)]
    cols, rows = min(per_row, len(mols)), math.ceil(len(mols) / per_row)
    drawer = rdMolDraw2D.MolDraw2DCairo(width * cols, height * rows, width, height)
    if any(w is not None for w in weights):
        drawer.drawOptions().useBWAtomPalette()
    drawer.DrawMolecules(
        mols,
        highlightAtoms=[list(c) for c in colours],
        highlightBonds=[[] for _ in mols],
        highlightAtomColors=colours,
        highlightAtomRadii=[dict.fromkeys(c, HIGHLIGHT_RADIUS) for c in colours],
        legends=legends,
    )
    drawer.FinishDrawing()
    return drawer.GetDrawingText()


def _atom_colours(mol: Chem.Mol, weights: Sequence[float] | None) -> dict[int, tuple[float, float, float]]:
    """Atom index → RGB: white → red for positive weights, white → blue for negative, by ``|w| / max|w|``."""
    if weights is None:
        return {}
    values = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(values) != mol.GetNumAtoms():
        raise DataError(
            f"atom_weights: {len(values)} weights for {mol.GetNumAtoms()} atoms in '{Chem.MolToSmiles(mol)}'"
        )
    if not np.isfinite(values).all():
        raise DataError("atom_weights must be finite numbers")
    peak = np.abs(values).max()
    colours = {}
    for index, value in enumerate(values):
        if value != 0:
            fade = float(1 - abs(value) / peak)
            colours[index] = (1.0, fade, fade) if value > 0 else (fade, fade, 1.0)
    return colours
