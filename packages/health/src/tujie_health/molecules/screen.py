"""Virtual screening: a library of any size (``.smi``, CSV/TSV with a SMILES column) → a ranked CSV and a rejects
file, on the core's streaming inference engine.

>>> summary = screen("runs/ensemble", "library.smi", "hits.csv")       # doctest: +SKIP

Molecules are parsed and featurised in parallel (a process pool by default: RDKit holds the GIL; or a Dask cluster,
``backend=DaskBackend(address)``), predicted in chunks and written in input order to a working file, with
progress saved after every chunk, so an interrupted screen resumes where it stopped. The working file is then
sorted externally (sorted runs on disk, merged), so memory stays flat whatever the library size:

* ``hits.csv``: ``rank, row, score, uncertainty, smiles`` (+ one column per target when the model predicts several),
  best first (highest score; ``ascending=True`` for lowest first), ties by row; ``row`` is the input file line,
  ``smiles`` the canonical SMILES, ``uncertainty`` the ensemble's standard deviation (empty for one model).
* ``hits.csv.rejects.csv``: ``row, smiles, reason`` for each molecule that could not be read.

Good rows + rejects = input rows, always (checked by the engine).
"""

from __future__ import annotations

import csv
import functools
import heapq
import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from tujie_core import DataError
from tujie_core.inference import Backend, LocalBackend, Rejected, file_fingerprint, module_fingerprint, predict_stream
from tujie_core.progress import Mode
from tujie_health.molecules.data import iter_library, library_header
from tujie_health.molecules.featurize import MolFeatures, MolGraph, featurize_mols, parse_smiles, standardize
from tujie_health.molecules.predictor import MoleculeModel

SORT_RUN_ROWS = 200_000  # rows sorted in memory at a time (≈ 60 MB); longer libraries merge runs from disk


@dataclass
class ScreenSummary:
    """What a screen did: molecules read, ranked and rejected, and how fast (molecules/s over the whole job: reading,
    featurising, predicting and ranking)."""

    output: Path
    rejects: Path | None
    rows: int
    screened: int
    rejected: int
    resumed_from: int
    seconds: float

    @property
    def molecules_per_second(self) -> float:
        return (self.rows - self.resumed_from) / self.seconds if self.seconds > 0 else 0.0


def prepare_smiles(
    standardized: bool, records: list[str], mol_features: MolFeatures = "none"
) -> list[MolGraph | Rejected]:
    """SMILES → graphs (a :class:`Rejected` with the reason for an invalid one); module-level so it pickles."""
    mols: list[Any] = []
    out: list[MolGraph | Rejected | None] = []
    for text in records:
        try:
            mol = parse_smiles(text)
        except Exception as exc:  # DataError from validation; anything else is still this row's fault
            out.append(Rejected(str(exc) if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"))
            continue
        mols.append(standardize(mol) if standardized else mol)
        out.append(None)
    graphs = iter(featurize_mols(mols, mol_features))
    return [next(graphs) if item is None else item for item in out]


class Scorer:
    """Graphs → output rows (score, uncertainty, SMILES, per-target values); a picklable callable for the engine."""

    def __init__(self, model: MoleculeModel, target: int) -> None:
        self.model, self.target = model, target

    def __call__(self, graphs: list[MolGraph]) -> list[list[Any]]:
        mean, std = self.model.outputs(graphs)
        t = self.target
        rows = []
        for i, graph in enumerate(graphs):
            spread = "" if std is None else f"{std[i, t]:.6g}"
            extra = [f"{v:.6g}" for v in mean[i]] if mean.shape[1] > 1 else []
            rows.append([f"{mean[i, t]:.6g}", spread, graph.smiles, *extra])
        return rows


def _smiles_of(record: Any) -> list[Any]:
    return [record if isinstance(record, str) else ""]


def screen(
    model: str | Path | MoleculeModel,
    library: str | Path,
    output: str | Path,
    *,
    target: str | None = None,
    ascending: bool = False,
    smiles_column: str | None = None,
    backend: str | Backend = "processes",
    workers: int | None = None,
    chunk_size: int = 512,
    resume: bool = True,
    progress: Mode = "auto",
) -> ScreenSummary:
    """Rank every molecule of ``library`` by the model's prediction for ``target`` (default: its first) into
    ``output`` (see the module doc). ``backend``: ``processes`` (default), ``threads``, ``dask`` or a
    :class:`~tujie_core.inference.Backend` such as ``DaskBackend(address="tcp://scheduler:8786")``."""
    started = time.perf_counter()
    model = model if isinstance(model, MoleculeModel) else MoleculeModel.load(model)
    library, output = Path(library), Path(output)
    column = model.target_index(target)
    library_header(library, smiles_column)  # fail fast: a missing or empty file, no SMILES column
    work = output.with_name(output.name + ".work.csv")
    done_marker = output.with_name(output.name + ".work.done.json")
    extra = [f"pred_{t}" for t in model.targets] if len(model.targets) > 1 else []
    job = {
        "input": file_fingerprint(library),
        "smiles_column": smiles_column,
        "models": [module_fingerprint(m) for m in model.members],
        "target": column,
        "standardize": model.standardized,
    }
    finished = resume and done_marker.is_file() and work.is_file() and _read_json(done_marker).get("job") == job
    if finished:
        state = _read_json(done_marker)
        rows, rejected, resumed_from = state["rows"], state["rejected"], state["rows"]
    else:
        done_marker.unlink(missing_ok=True)

        def records() -> Iterator[tuple[int, str | Rejected]]:
            for line, smiles in iter_library(library, smiles_column):
                yield line, smiles if smiles is not None else Rejected("wrong number of fields")

        result = predict_stream(
            records,
            Scorer(model, column),
            work,
            header=["score", "uncertainty", "smiles", *extra],
            prepare=functools.partial(prepare_smiles, model.standardized, mol_features=model.mol_features),
            reject_header=["smiles"],
            reject_fields=_smiles_of,
            chunk_size=chunk_size,
            workers=workers,
            backend=_backend(backend, workers),
            resume=resume,
            job=job,
            progress=progress,
        )
        if result.rows == 0:
            raise DataError(f"{library}: no molecules (empty library)")
        rows, rejected, resumed_from = result.rows, result.rejected, result.resumed_from
        done_marker.write_text(json.dumps({"job": job, "rows": rows, "rejected": rejected}), encoding="utf-8")
    rank_file(work, output, descending=not ascending)
    rejects = output.with_name(output.name + ".rejects.csv")
    work_rejects = work.with_name(work.name + ".rejects.csv")
    if work_rejects.is_file():
        os.replace(work_rejects, rejects)
    elif not finished:
        rejects.unlink(missing_ok=True)
    work.unlink()
    done_marker.unlink()
    return ScreenSummary(
        output,
        rejects if rejected else None,
        rows,
        rows - rejected,
        rejected,
        resumed_from,
        time.perf_counter() - started,
    )


def _backend(backend: str | Backend, workers: int | None) -> str | Backend:
    """``processes``: whole chunks (featurise and predict) in worker processes, one torch thread each, so the main
    process only reads, writes and ranks; ``fork`` starts them in milliseconds with the model already loaded, on
    Linux from a process with no other thread (forking a threaded process can deadlock a child on a lock another
    thread held: a notebook, a web server), else ``forkserver`` (or ``spawn`` where neither exists)."""
    if backend != "processes":
        return backend
    alone = threading.active_count() == 1
    method = "fork" if sys.platform.startswith("linux") and alone else None  # fork is unsafe on macOS
    return LocalBackend(workers or 0, processes=True, predict_in_workers=True, start_method=method)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def rank_file(work: Path, output: Path, *, descending: bool = True, run_rows: int = SORT_RUN_ROWS) -> int:
    """Sort the working CSV (``row, score, …``) by score (then row) into ``output`` with a ``rank`` column in front:
    sorted runs of ``run_rows`` on disk, then one merge; the output appears atomically. Returns the rows ranked."""
    sign = -1.0 if descending else 1.0

    def key(fields: Sequence[str]) -> tuple[float, int]:
        return sign * float(fields[1]), int(fields[0])

    runs: list[Path] = []
    try:
        with work.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            while block := list(islice(reader, run_rows)):
                block.sort(key=key)
                path = output.with_name(f"{output.name}.run{len(runs)}.tmp")
                with path.open("w", newline="", encoding="utf-8") as out:
                    csv.writer(out).writerows(block)
                runs.append(path)
        partial = output.with_name(output.name + ".tmp")
        handles = [p.open(newline="", encoding="utf-8") for p in runs]
        count = 0
        try:
            with partial.open("w", newline="", encoding="utf-8") as out:
                writer = csv.writer(out)
                writer.writerow(["rank", *header])
                for count, fields in enumerate(heapq.merge(*map(csv.reader, handles), key=key), 1):
                    writer.writerow([count, *fields])
        finally:
            for h in handles:
                h.close()
        os.replace(partial, output)
        return count
    finally:
        for path in runs:
            path.unlink(missing_ok=True)
