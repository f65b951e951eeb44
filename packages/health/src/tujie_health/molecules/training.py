"""Training molecule models: one run or an ensemble of seeds on the same split, each compared in its report with a
fingerprint baseline (Morgan/ECFP4 bits + random forest) fitted on the same training molecules; and scoring a
trained model on a labelled file.

>>> result = train_molecules(seeds=3)                    # FreeSolv, D-MPNN × 3 seeds, ~1.5 min on 2 cores
>>> result.metrics["test/rmse"], result.folder           # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.metrics import average_precision_score, roc_auc_score

from tujie_core import DataError, RunResult, load_config, train_from_config
from tujie_core.cli import plugin_flags
from tujie_core.inference import default_workers
from tujie_core.report import replace_section
from tujie_core.run import load_run
from tujie_health.molecules.data import MoleculeDataset, read_table, shipped_table, target_matrix
from tujie_health.molecules.predictor import ENSEMBLE_NAME, MoleculeModel
from tujie_health.molecules.scoring import screening_metrics

DEFAULT_CONFIG = "freesolv_dmpnn"


def fingerprints(smiles: Sequence[str], radius: int = 2, bits: int = 2048) -> np.ndarray:
    """Morgan (ECFP4 at radius 2) bit vectors, (N, bits) uint8."""
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits)
    out = np.zeros((len(smiles), bits), dtype=np.uint8)
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s)
        if mol is None:
            raise DataError(f"fingerprint: invalid SMILES '{s}'")
        out[i] = generator.GetFingerprintAsNumPy(mol)
    return out


def scores(kind: str, values: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Regression: RMSE, MAE, R² over every measured value (the mean over targets for several); classification:
    ROC-AUC and PR-AUC (mean over labels with both classes), accuracy at 0.5."""
    out: dict[str, list[float]] = {}
    for t in range(y.shape[1]):
        keep = ~np.isnan(y[:, t])
        pred, true = values[keep, t], y[keep, t]
        if len(true) == 0:
            continue
        if kind == "regression":
            err = pred - true
            ss = float(((true - true.mean()) ** 2).sum())
            out.setdefault("rmse", []).append(float(np.sqrt(np.mean(err**2))))
            out.setdefault("mae", []).append(float(np.mean(np.abs(err))))
            out.setdefault("r2", []).append(1 - float((err**2).sum()) / ss if ss > 0 else math.nan)
        else:
            out.setdefault("accuracy", []).append(float(((pred > 0.5) == (true > 0.5)).mean()))
            if len(np.unique(true)) == 2:
                out.setdefault("roc_auc", []).append(float(roc_auc_score(true, pred)))
                out.setdefault("pr_auc", []).append(float(average_precision_score(true, pred)))
    return {k: float(np.nanmean(v)) if not np.isnan(v).all() else math.nan for k, v in out.items()}


@dataclass
class FingerprintBaseline:
    """One random forest per target on Morgan bits, fitted on the measured rows of that target."""

    kind: str
    seed: int = 0
    models: list[Any] = field(default_factory=list)

    def fit(self, smiles: Sequence[str], y: np.ndarray) -> FingerprintBaseline:
        x = fingerprints(smiles)
        forest = RandomForestRegressor if self.kind == "regression" else RandomForestClassifier
        self.models = []
        for t in range(y.shape[1]):
            keep = ~np.isnan(y[:, t])
            model = forest(n_estimators=500, n_jobs=default_workers(), random_state=self.seed)
            self.models.append(model.fit(x[keep], y[keep, t]))
        return self

    def predict(self, smiles: Sequence[str]) -> np.ndarray:
        x = fingerprints(smiles)
        columns = []
        for model in self.models:
            if self.kind == "regression":
                columns.append(model.predict(x))
            else:
                probs = model.predict_proba(x)
                columns.append(probs[:, list(model.classes_).index(1.0)] if 1.0 in model.classes_ else probs[:, 0] * 0)
        return np.stack(columns, 1)


@dataclass
class MoleculeResult:
    """A trained model (a run, or an ensemble folder holding one run per seed) and its scores per split."""

    folder: Path
    runs: list[RunResult]
    scores: dict[str, dict[str, dict[str, float]]]  # split → model name → metric → value

    @property
    def metrics(self) -> dict[str, float]:
        """The model's own scores as ``split/metric`` (the ensemble's for several seeds)."""
        first = {s: next(iter(rows.values())) for s, rows in self.scores.items()}
        return {f"{s}/{k}": v for s, row in first.items() for k, v in row.items()}

    @property
    def report(self) -> Path:
        return self.folder / "report.md"


def evaluate_splits(
    model: MoleculeModel, splits: dict[str, MoleculeDataset], baseline: FingerprintBaseline
) -> dict[str, dict[str, Any]]:
    """Scores of ``model`` and of the fitted fingerprint ``baseline`` on val and test."""
    ours = "ensemble" if len(model.members) > 1 else "model"
    table: dict[str, dict[str, Any]] = {}
    for name in ("val", "test"):
        part = splits.get(name)
        if part is None or len(part) == 0:
            continue
        y = part.targets.astype(np.float64)
        predicted = model.predict(part.smiles)
        table[name] = {
            ours: scores(model.kind, predicted.values, y),
            "fingerprint RF": scores(model.kind, baseline.predict(part.smiles), y),
        }
        if predicted.std is not None and model.kind == "regression":
            err = np.abs(predicted.values - y)[~np.isnan(y)]
            rho = spearmanr(predicted.std[~np.isnan(y)], err).statistic
            table[name][ours]["spearman_std_error"] = float(rho)
    return table


def _splits_of(run_dir: Path) -> dict[str, MoleculeDataset]:
    run = load_run(run_dir)
    if run.config.data.name != "molecules":
        raise DataError(f"{run_dir}: not a molecule run (data '{run.config.data.name}')")
    return {"train": run.splits.train, "val": run.splits.val, "test": run.splits.test}  # type: ignore[dict-item]


def _write_report(folder: Path, table: dict[str, dict[str, Any]], note: str) -> None:
    report = folder / "report.md"
    if not report.is_file():
        report.write_text(f"# Ensemble report: {folder.name}\n", encoding="utf-8")
    lines = [note, ""]
    for split, rows in table.items():
        metrics = sorted({k for row in rows.values() for k in row})
        lines += [f"**{split}**", "", "| model | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        for name, row in rows.items():
            cells = (f"{row[m]:.4f}" if m in row else "–" for m in metrics)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    replace_section(report, "## Baselines", "\n".join(lines))


def train_molecules(
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    seeds: int = 1,
    dp: str | None = None,
    resume: str | Path | None = None,
    baseline: bool = True,
) -> MoleculeResult:
    """Train ``seeds`` models (trainer seeds 0 … seeds-1; the data split stays the config's) and score them with
    the fingerprint baseline. One seed: a plain run folder. Several: an ensemble folder
    ``<output_dir>/<name>-ensemble/<time>/`` with ``ensemble.json``, ``report.md`` and one run per seed under
    ``seed<k>/``; ``resume`` (that folder) skips finished members and resumes an interrupted one."""
    from tujie_health.cli import bundled_config

    source = config or bundled_config(DEFAULT_CONFIG)
    if seeds < 1:
        raise DataError(f"seeds must be ≥ 1, got {seeds}")
    if seeds == 1:
        raw = load_config(source, list(overrides), plugin_flags(dp))
        result = train_from_config(raw, resume=resume)
        folder, runs = result.run_dir, [result]
    else:
        base = load_config(source, list(overrides), plugin_flags(dp))
        folder = (
            Path(resume)
            if resume
            else base.output_dir / f"{base.name}-ensemble" / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        )
        folder.mkdir(parents=True, exist_ok=True)
        runs = []
        for k in range(seeds):
            member = [*overrides, f"trainer.seed={k}", f"output_dir={folder}", f"name=seed{k}"]
            runs.append(_train_member(source, member, folder / f"seed{k}", dp))
        members = [str(r.run_dir.relative_to(folder)) for r in runs]
        (folder / ENSEMBLE_NAME).write_text(json.dumps({"members": members, "seeds": seeds}, indent=2), "utf-8")
    model = MoleculeModel.load(folder)
    splits = _splits_of(runs[0].run_dir)
    table: dict[str, dict[str, Any]] = {}
    if baseline:
        train = splits["train"]
        fitted = FingerprintBaseline(model.kind).fit(train.smiles, train.targets.astype(np.float64))
        table = evaluate_splits(model, splits, fitted)
        note = "Fingerprint baseline: Morgan radius 2, 2048 bits, random forest (500 trees), same training molecules."
        if seeds > 1:
            note += f" Ensemble of {seeds} seeds: mean prediction; uncertainty = the members' standard deviation."
            for r in runs:
                _write_report(r.run_dir, evaluate_splits(MoleculeModel.load(r.run_dir), splits, fitted), note)
        _write_report(folder, table, note)
    return MoleculeResult(folder, runs, table)


def _train_member(source: str | Path, overrides: list[str], member_dir: Path, dp: str | None) -> RunResult:
    """Train one ensemble member, or take it as it is when finished, or resume it when interrupted."""
    runs = sorted(p for p in member_dir.glob("*") if p.is_dir()) if member_dir.is_dir() else []
    latest = runs[-1] if runs else None
    raw = load_config(source, overrides, plugin_flags(dp))
    if latest is not None and (latest / "summary.json").is_file():
        summary = json.loads((latest / "summary.json").read_text(encoding="utf-8"))
        return RunResult(latest, summary.get("metrics", {}), latest / "report.md")
    resume = latest if latest is not None and (latest / "checkpoints" / "last.ckpt").is_file() else None
    return train_from_config(raw, resume=resume)


def labelled_table(
    path: str | Path, model: MoleculeModel, smiles_column: str | None = None
) -> tuple[list[str], np.ndarray, str]:
    """SMILES and the model's targets from a labelled file (or a shipped set by name: ``freesolv``)."""
    if str(path) in ("freesolv", "solubility"):
        table, _ = shipped_table(str(path))
    else:
        table = read_table(path, smiles_column)
    absent = [t for t in model.targets if t not in table.header]
    if absent:
        raise DataError(f"{table.where}: no target column(s) {', '.join(absent)} to evaluate against")
    return table.column(table.smiles_column), target_matrix(table, model.targets), table.where


def evaluate_file(model: MoleculeModel, path: str | Path, smiles_column: str | None = None) -> dict[str, float]:
    """Scores on a labelled file (see :func:`scores`); for one binary target also enrichment (EF 1 %, 5 %),
    BEDROC and ROC-AUC of the ranking. Invalid SMILES are counted (``rejected``) and left out."""
    smiles, y, where = labelled_table(path, model, smiles_column)
    predicted = model.predict(smiles)
    if not predicted.index:
        raise DataError(f"{where}: no valid SMILES to evaluate")
    y = y[predicted.index]
    result = scores(model.kind, predicted.values, y)
    if model.kind == "binary":
        keep = ~np.isnan(y[:, 0])
        actives = y[keep, 0] > 0.5
        if 0 < actives.sum() < len(actives):
            ranked = screening_metrics(predicted.values[keep, 0], actives)
            result |= {k: float(v) for k, v in ranked.items() if k not in ("roc_auc", "actives", "molecules")}
    return {**result, "molecules": float(len(predicted.index)), "rejected": float(len(predicted.rejected))}
