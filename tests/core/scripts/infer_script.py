"""Streams a CSV through tujie_core.inference; ``--kill-at-chunk K`` SIGKILLs the process while predicting chunk K."""

from __future__ import annotations

import argparse
import csv
import os
import signal
from pathlib import Path

from tujie_core.inference import Rejected, file_fingerprint, predict_stream


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--kill-at-chunk", type=int, default=0)
    args = parser.parse_args()
    chunks = 0

    def rows():
        with args.input.open(newline="") as handle:
            reader = csv.reader(handle)
            next(reader)
            for line, (text,) in enumerate(reader, start=2):
                yield line, text

    def prepare(texts):
        return [t if t else Rejected("empty text") for t in texts]

    def predict(texts):
        nonlocal chunks
        chunks += 1
        if chunks == args.kill_at_chunk:
            os.kill(os.getpid(), signal.SIGKILL)
        return [[t.upper(), f"{len(t) / 7:.6f}"] for t in texts]

    summary = predict_stream(
        rows,
        predict,
        args.output,
        header=["text", "score"],
        prepare=prepare,
        id_column="line",
        chunk_size=50,
        workers=2,
        job=file_fingerprint(args.input),
        progress="none",
    )
    print(
        f"rows={summary.rows} predicted={summary.predicted} rejected={summary.rejected} resumed={summary.resumed_from}"
    )


if __name__ == "__main__":
    main()
