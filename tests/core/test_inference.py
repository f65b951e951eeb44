"""The streaming inference engine: every row accounted for, bad rows isolated, exact resume after SIGKILL, flat
memory, a worker pool, progress with rows/s, and the same bytes from every backend (threads, processes, Dask)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest
import torch

from tujie_core import ConfigError, DataError
from tujie_core.inference import (
    BACKENDS,
    DaskBackend,
    LocalBackend,
    Rejected,
    default_workers,
    file_fingerprint,
    predict_stream,
    resolve_backend,
)

SCRIPT = Path(__file__).parent / "scripts" / "infer_script.py"


def numbers(n: int):
    return lambda: ((i, str(i)) for i in range(n))


def double(items):
    return [[int(x) * 2] for x in items]


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def test_every_row_is_predicted_or_rejected_with_its_reason(tmp_path: Path) -> None:
    def rows():
        yield 1, "3"
        yield 2, Rejected("invalid JSON")
        yield 3, "oops"
        yield 4, "5"

    def prepare(items):
        return [int(x) if x.isdigit() else Rejected(f"not a number: {x!r}") for x in items]

    summary = predict_stream(
        rows, lambda xs: [[x * 10] for x in xs], tmp_path / "out.csv", header=["y"], prepare=prepare, progress="none"
    )
    assert (summary.rows, summary.predicted, summary.rejected) == (4, 2, 2)
    assert read_rows(summary.output) == [["row", "y"], ["1", "30"], ["4", "50"]]
    assert read_rows(summary.rejects) == [["row", "reason"], ["2", "invalid JSON"], ["3", "not a number: 'oops'"]]
    assert [str(r) for r in summary.examples] == ["row 2: invalid JSON", "row 3: not a number: 'oops'"]
    assert not (tmp_path / "out.csv.progress.json").exists()


def test_no_rejects_file_when_every_row_is_good(tmp_path: Path) -> None:
    summary = predict_stream(numbers(10), double, tmp_path / "out.csv", header=["y"], progress="none")
    assert summary.rejects is None and not (tmp_path / "out.csv.rejects.csv").exists()
    assert [r[1] for r in read_rows(summary.output)[1:]] == [str(2 * i) for i in range(10)]


def test_a_row_that_makes_predict_raise_is_rejected_alone(tmp_path: Path) -> None:
    def predict(items):
        if "13" in items:
            raise DataError("cannot decode row 13")
        return double(items)

    summary = predict_stream(numbers(40), predict, tmp_path / "out.csv", header=["y"], chunk_size=8, progress="none")
    assert (summary.predicted, summary.rejected) == (39, 1)
    assert read_rows(summary.rejects)[1:] == [["13", "cannot decode row 13"]]
    assert len(read_rows(summary.output)) == 1 + 39


def test_a_job_where_every_row_fails_alike_raises(tmp_path: Path) -> None:
    def broken(items):
        raise RuntimeError("model expects 3 channels")

    with pytest.raises(RuntimeError, match="3 channels"):
        predict_stream(numbers(20), broken, tmp_path / "out.csv", header=["y"], chunk_size=5, progress="none")


def test_prepare_runs_on_a_pool_and_output_keeps_input_order(tmp_path: Path) -> None:
    threads: set[int] = set()
    barrier = threading.Barrier(2, timeout=10)  # passes only if two chunks are prepared at the same time

    def prepare(items):
        threads.add(threading.get_ident())
        if len(threads) <= 2 and items[0] in ("0", "10"):
            barrier.wait()
        return items

    summary = predict_stream(
        numbers(100),
        double,
        tmp_path / "out.csv",
        header=["y"],
        prepare=prepare,
        chunk_size=10,
        workers=2,
        progress="none",
    )
    assert len(threads) == 2 and threading.get_ident() not in threads
    assert [r[0] for r in read_rows(summary.output)[1:]] == [str(i) for i in range(100)]
    assert default_workers() >= 1


def run_script(source: Path, output: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(source), str(output), *extra], capture_output=True, text=True, timeout=120
    )


def test_killed_mid_file_and_resumed_gives_the_uninterrupted_output(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        "text\n" + "".join(('""' if i % 17 == 0 else f'"row {i}, ""quoted"""') + "\n" for i in range(1000))
    )
    fresh = run_script(source, tmp_path / "fresh.csv")
    assert fresh.returncode == 0, fresh.stderr
    assert "rows=1000 predicted=941 rejected=59 resumed=0" in fresh.stdout

    killed = run_script(source, tmp_path / "out.csv", "--kill-at-chunk", "9")
    assert killed.returncode == -9  # SIGKILL: no clean-up ran
    progress = tmp_path / "out.csv.progress.json"
    assert progress.exists()
    with (tmp_path / "out.csv").open("ab") as handle:
        handle.write(b"402,HALF-WRITTEN")  # a torn write after the last recorded chunk
    resumed = run_script(source, tmp_path / "out.csv")
    assert resumed.returncode == 0, resumed.stderr
    assert "rows=1000 predicted=941 rejected=59" in resumed.stdout and "resumed=0" not in resumed.stdout
    assert (tmp_path / "out.csv").read_bytes() == (tmp_path / "fresh.csv").read_bytes()
    assert (tmp_path / "out.csv.rejects.csv").read_bytes() == (tmp_path / "fresh.csv.rejects.csv").read_bytes()
    assert not progress.exists()


def test_a_changed_input_starts_over_instead_of_resuming(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("text\n" + "".join(f"row {i}\n" for i in range(500)))
    assert run_script(source, tmp_path / "out.csv", "--kill-at-chunk", "4").returncode == -9
    source.write_text("text\n" + "".join(f"new {i}\n" for i in range(300)))
    again = run_script(source, tmp_path / "out.csv")
    assert "rows=300 predicted=300 rejected=0 resumed=0" in again.stdout
    assert all(r[1].startswith("NEW") for r in read_rows(tmp_path / "out.csv")[1:])


def peak_bytes(n: int, path: Path) -> int:
    tracemalloc.start()
    predict_stream(numbers(n), double, path, header=["y"], chunk_size=500, workers=2, progress="none")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_does_not_grow_with_the_number_of_rows(tmp_path: Path) -> None:
    small = peak_bytes(10_000, tmp_path / "small.csv")
    large = peak_bytes(100_000, tmp_path / "large.csv")
    assert len(read_rows(tmp_path / "large.csv")) == 100_001
    assert large < small * 1.5 + 256 * 1024  # ten times the rows, about the same peak


def test_plain_progress_reports_rows_per_second(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    summary = predict_stream(numbers(300), double, tmp_path / "out.csv", header=["y"], progress="plain")
    err = capsys.readouterr().err
    assert "predicted 300 rows" in err and "rows/s" in err
    assert summary.rows_per_second > 0


def test_fingerprint_changes_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("x\n1\n")
    before = file_fingerprint(path)
    path.write_text("x\n1\n2\n")
    assert file_fingerprint(path) != before


# ---- backends: the job's functions live at module level, so a process pool can pickle them by reference -------
def mixed(n: int):
    """Rows 0..n-1: every 11th rejected by the reader, the other multiples of 7 not numbers, 13 breaks predict."""
    return lambda: (
        (i, Rejected("invalid JSON") if i % 11 == 0 else f"x{i}" if i % 7 == 0 else str(i)) for i in range(n)
    )


def parse(items):
    return [int(x) if x.isdigit() else Rejected(f"not a number: {x!r}") for x in items]


def score(items):
    if 13 in items:
        raise DataError("cannot score 13")
    return [[x * 10, f"{x / 7:.6f}"] for x in items]


def text_of(record):
    return [record.strip()]  # a reader's Rejected has no text: blank


def broken(items):
    raise RuntimeError("model expects 3 channels")


def run_mixed(path: Path, backend, rows=None):
    return predict_stream(
        rows or mixed(300),
        score,
        path,
        header=["y", "score"],
        prepare=parse,
        reject_header=["text"],
        reject_fields=text_of,
        chunk_size=7,
        workers=2,
        backend=backend,
        progress="none",
    )


@pytest.fixture(scope="module")
def dask_address():
    """A scheduler address: two Dask workers on threads of this process (no start-up imports), still talking over
    TCP, so the job, chunks, results and errors are all serialized."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=None, silence_logs=40
    ) as cluster:
        yield cluster.scheduler_address


def test_processes_and_dask_write_the_bytes_of_threads(tmp_path: Path) -> None:
    expected = run_mixed(tmp_path / "threads.csv", "threads")
    assert (expected.rows, expected.predicted, expected.rejected) == (300, 232, 68)
    assert read_rows(expected.rejects)[:3] == [
        ["row", "text", "reason"],
        ["0", "", "invalid JSON"],
        ["7", "x7", "not a number: 'x7'"],
    ]
    local = DaskBackend(workers=2)  # starts a local cluster for the run and closes it after
    whole_chunks = LocalBackend(2, processes=True, predict_in_workers=True, start_method="fork")
    for name, backend in (("processes", "processes"), ("whole-chunks", whole_chunks), ("dask", local)):
        summary = run_mixed(tmp_path / f"{name}.csv", backend)
        assert summary.output.read_bytes() == expected.output.read_bytes()
        assert summary.rejects.read_bytes() == expected.rejects.read_bytes()
        assert summary.examples == expected.examples
    assert local.workers == 2


def where_predicted(items):
    return [[x, os.getpid(), torch.get_num_threads()] for x in items]


def test_whole_chunks_run_in_the_worker_processes(tmp_path: Path) -> None:
    for method in ("fork", "forkserver"):
        summary = predict_stream(
            numbers(40),
            where_predicted,
            tmp_path / f"{method}.csv",
            header=["x", "pid", "threads"],
            chunk_size=5,
            backend=LocalBackend(2, processes=True, predict_in_workers=True, start_method=method),
            progress="none",
        )
        rows = read_rows(summary.output)[1:]
        assert [int(r[1]) for r in rows] == list(range(40))
        pids = {int(r[2]) for r in rows}
        assert os.getpid() not in pids and 1 <= len(pids) <= 2  # predicted in the pool, not on this thread
        assert {r[3] for r in rows} == {"1"}  # one torch thread per worker


def test_process_options_are_refused_on_a_thread_pool() -> None:
    with pytest.raises(ValueError, match="options of a process pool"):
        LocalBackend(2, predict_in_workers=True)
    with pytest.raises(ConfigError, match="start method 'nope' is not available"):
        LocalBackend(2, processes=True, start_method="nope")  # type: ignore[arg-type]


def test_dask_run_interrupted_and_resumed_gives_the_uninterrupted_output(tmp_path: Path, dask_address: str) -> None:
    def interrupted():  # Ctrl-C while reading row 200
        for row in mixed(300)():
            if row[0] == 200:
                raise KeyboardInterrupt
            yield row

    expected = run_mixed(tmp_path / "fresh.csv", "threads")
    backend = DaskBackend(dask_address)
    with pytest.raises(KeyboardInterrupt):
        run_mixed(tmp_path / "out.csv", backend, rows=interrupted)
    done = json.loads((tmp_path / "out.csv.progress.json").read_text())["rows"]
    assert 0 < done < 200 and done % 7 == 0
    with (tmp_path / "out.csv").open("ab") as handle:
        handle.write(b"150,HALF-WRITTEN")
    resumed = run_mixed(tmp_path / "out.csv", backend)
    assert (resumed.resumed_from, resumed.rows, resumed.rejected) == (done, 300, 68)
    assert resumed.output.read_bytes() == expected.output.read_bytes()
    assert resumed.rejects.read_bytes() == expected.rejects.read_bytes()
    assert backend.workers == 2


def test_a_broken_job_raises_alike_on_every_backend(tmp_path: Path, dask_address: str) -> None:
    for backend in ("threads", "processes", DaskBackend(dask_address)):
        with pytest.raises(RuntimeError, match="3 channels") as raised:
            predict_stream(
                numbers(20),
                double,
                tmp_path / "out.csv",
                header=["y"],
                prepare=broken,
                chunk_size=5,
                workers=2,
                backend=backend,
                resume=False,
                progress="none",
            )
    assert "raised on a Dask worker for the chunk of rows 0 to 4" in raised.value.__notes__


def test_reject_fields_go_between_the_row_id_and_the_reason(tmp_path: Path) -> None:
    def rows():
        yield 1, "CCO"
        yield 2, " C1CC "
        yield 3, Rejected("wrong field count")

    def prepare(smiles):
        return [s if "1" not in s else Rejected("unclosed ring") for s in smiles]

    summary = predict_stream(
        rows,
        lambda xs: [[len(x)] for x in xs],
        tmp_path / "out.csv",
        header=["atoms"],
        prepare=prepare,
        reject_header=["smiles"],
        reject_fields=text_of,
        progress="none",
    )
    assert read_rows(summary.rejects) == [
        ["row", "smiles", "reason"],
        ["2", "C1CC", "unclosed ring"],
        ["3", "", "wrong field count"],
    ]
    assert [r.fields for r in summary.examples] == [("C1CC",), ("",)]
    with pytest.raises(ValueError, match="go together"):
        predict_stream(rows, double, tmp_path / "b.csv", header=["y"], reject_header=["smiles"], progress="none")
    with pytest.raises(ValueError, match="returned 2 values"):
        predict_stream(
            rows,
            double,
            tmp_path / "c.csv",
            header=["y"],
            prepare=prepare,
            reject_header=["smiles"],
            reject_fields=lambda s: [s, s],
            progress="none",
        )


def test_backends_by_name_and_an_unknown_one(tmp_path: Path) -> None:
    assert BACKENDS.names() == ["dask", "processes", "threads"]
    assert resolve_backend("processes", 3) == LocalBackend(3, processes=True)
    assert resolve_backend("dask", None) == DaskBackend()
    with pytest.raises(
        ConfigError, match=r"'thread' is not .*did you mean 'threads'.*available: dask, processes, threads"
    ):
        predict_stream(numbers(3), double, tmp_path / "out.csv", header=["y"], backend="thread", progress="none")
    with pytest.raises(ConfigError, match="module-level function"):
        predict_stream(
            numbers(3),
            double,
            tmp_path / "out.csv",
            header=["y"],
            prepare=lambda xs: xs,
            backend="processes",
            progress="none",
        )
