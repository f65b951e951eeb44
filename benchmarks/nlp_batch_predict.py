"""``tujie nlp predict`` on files of growing size: peak memory, rows/s, and resume after an interruption.

The shipped MiniLM-L6 with a new 2-class head (saved once with ``save_pretrained``) predicts SST-2 ``train.tsv``
sentences (a seeded sample, repeated for sizes above the file's 67,349 rows) with the CLI's defaults: chunks of
1,024 rows, tokenising on one thread per core. Each size runs in its own ``tujie nlp predict`` process; its peak
resident memory is sampled every 0.1 s (psutil). Then the largest file is predicted again, killed (SIGKILL: no
clean-up runs) half-way and rerun: the rerun must say it resumed and give a byte-identical output.

Throughput is given for the whole command (start-up and model loading included, as the anchor was measured) and
as the engine reports it while predicting. The anchor is tujie's own figure before the streaming engine (issue
10: the whole file read and tokenised first; 1.55 GB at 5,000 rows, 1.68 GB at 20,000, 92 s for 20,000 rows).
Goal: peak memory of the largest size at most 1.05× that of the smallest (flat in file size).

    python benchmarks/nlp_batch_predict.py [--quick] [--json PATH] [--sizes 5000,20000,100000]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _common import Row, data_dir, parse_args, report

BEFORE = {5000: (1.55 * 1024, None), 20000: (1.68 * 1024, 20000 / 92)}  # MB, rows/s before streaming
ANCHOR = "tujie before streaming (whole file read first), issue 10"
TUJIE = [str(Path(sys.executable).with_name("tujie"))]


def options(parser) -> None:
    parser.add_argument("--sizes", help="comma-separated row counts (default 5000,20000,100000; quick 2000,8000)")


def write_rows(source: Path, target: Path, n: int) -> Path:
    header, *rows = source.read_text(encoding="utf-8").splitlines()
    random.Random(0).shuffle(rows)
    chosen = [rows[i % len(rows)] for i in range(n)]
    target.write_text("\n".join([header, *chosen]) + "\n", encoding="utf-8")
    return target


def run_predict(model: Path, source: Path, output: Path, stop_at: int | None = None) -> tuple[float, float, str]:
    """Seconds, peak resident MB and the standard output of one ``tujie nlp predict``; with ``stop_at``, it is
    killed (SIGKILL) once that many rows are done."""
    command = [*TUJIE, "nlp", "predict", str(model), str(source), str(output), "--text-column", "sentence"]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched, peak, interrupted = psutil.Process(process.pid), 0, False
    progress = output.with_name(output.name + ".progress.json")
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if stop_at and not interrupted and _rows_done(progress) >= stop_at:
            process.send_signal(signal.SIGKILL)
            interrupted = True
        time.sleep(0.1)
    out, err = process.communicate()
    if not stop_at and process.returncode != 0:
        raise SystemExit(f"tujie nlp predict failed ({process.returncode}):\n{err[-2000:]}")
    said = " ".join(out.split()) or f"exit {process.returncode}"  # the console wraps long lines
    print(said, flush=True)
    return time.perf_counter() - start, peak / 2**20, said


def _rows_done(progress: Path) -> int:
    try:
        return int(json.loads(progress.read_text())["rows"])
    except (OSError, ValueError, KeyError):
        return 0


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], options)
    sizes = [int(s) for s in (args.sizes or ("2000,8000" if args.quick else "5000,20000,100000")).split(",")]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        from tujie_nlp import TextClassifier

        TextClassifier.from_encoder("minilm-l6", labels=["0", "1"]).save_pretrained(folder / "model")
        peaks = {}
        for n in sizes:
            source = write_rows(data_dir() / "sst2" / "train.tsv", folder / f"in{n}.tsv", n)
            seconds, peak, said = run_predict(folder / "model", source, folder / f"out{n}.csv")
            peaks[n] = peak
            before_mb, before_speed = BEFORE.get(n, (None, None))
            engine = float(re.findall(r"([\d,]+) rows/s", said)[-1].replace(",", ""))
            rows.append(Row(f"{n:,} rows", "peak resident memory", peak, before_mb, ANCHOR, None, False, "MB"))
            rows.append(Row(f"{n:,} rows", "rows/s, whole command", n / seconds, before_speed, ANCHOR, None, True, ""))
            rows.append(Row(f"{n:,} rows", "rows/s while predicting", engine, None, "", None, True, "rows/s"))
        largest, smallest = max(sizes), min(sizes)
        ratio = peaks[largest] / peaks[smallest]
        rows.append(Row(f"{largest:,} vs {smallest:,} rows", "peak memory ratio", ratio, None, "", 1.05, False, "×"))

        whole = (folder / f"out{largest}.csv").read_bytes()
        again = folder / "again.csv"
        run_predict(folder / "model", folder / f"in{largest}.tsv", again, stop_at=largest // 2)
        *_, said = run_predict(folder / "model", folder / f"in{largest}.tsv", again)
        identical = float("resumed after row" in said and again.read_bytes() == whole)
        rows.append(
            Row("killed half-way, then rerun", "resumed, output identical", identical, None, "", 1, True, "1=yes")
        )
    report("nlp_batch_predict: streaming tujie nlp predict", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
