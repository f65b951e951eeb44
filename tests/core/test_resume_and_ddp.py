"""Process-level guarantees: exact resume after SIGKILL, and 2-process DDP equals 1 process on the full batch."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).parent / "scripts" / "train_script.py"


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("averaging", [[], ["--ema-decay", "0.95"]], ids=["plain", "ema"])
def test_sigkill_mid_epoch_then_resume_is_bit_identical(averaging: list[str], tmp_path: Path) -> None:
    # digits train split: 1,617 samples / batch 64 = 26 steps per epoch; checkpoints every 5 steps.
    # Killed after step 33 (epoch 2, mid-epoch), the last checkpoint is step 30: steps 31-33 are redone.
    # With EMA the final weights are the average, so they also check that the average resumed exactly.
    common = ["--epochs", "3", "--checkpoint-every", "5", *averaging]
    reference = tmp_path / "reference.safetensors"
    assert_ok(run_script("--out", str(reference), "--run-dir", str(tmp_path / "ref_run"), *common))

    run_dir = tmp_path / "run"
    killed = run_script(
        "--out", str(tmp_path / "never.safetensors"), "--run-dir", str(run_dir), "--kill-at-step", "33", *common
    )
    assert killed.returncode == -signal.SIGKILL
    last = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["trainer"]["step"] == 30
    assert 0 < state["trainer"]["batches_in_epoch"] < 26, "the checkpoint must be mid-epoch"
    assert not (tmp_path / "never.safetensors").exists()
    assert not list((run_dir / "checkpoints").glob("*.tmp")), "no torn temp files left behind"

    resumed = tmp_path / "resumed.safetensors"
    # killed again at step 30 if the resume restarted from scratch: a real resume starts at step 31
    resume = ["--resume", str(last), "--kill-at-step", "30"]
    assert_ok(run_script("--out", str(resumed), "--run-dir", str(run_dir), *resume, *common))
    expected, actual = load_file(reference), load_file(resumed)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), f"{key} differs after resume"


@pytest.mark.multiprocess
def test_two_processes_of_16_equal_one_process_of_32(tmp_path: Path) -> None:
    common = ["--epochs", "1", "--samples", "256", "--dropout", "0", "--optimizer", "sgd"]
    single, double = tmp_path / "single.safetensors", tmp_path / "double.safetensors"
    assert_ok(run_script("--out", str(single), "--devices", "1", "--batch-size", "32", *common))
    assert_ok(run_script("--out", str(double), "--devices", "2", "--batch-size", "16", *common))
    one, two = load_file(single), load_file(double)
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-6, rtol=0)


@pytest.mark.multiprocess
def test_non_finite_loss_on_one_process_stops_every_process(tmp_path: Path) -> None:
    out = tmp_path / "never.safetensors"
    proc = run_script("--out", str(out), "--devices", "2", "--batch-size", "16", "--nan-on-rank", "1", timeout=180)
    assert proc.returncode != 0
    assert "step 3" in proc.stderr and "non-finite on another process" in proc.stderr  # rank 0 says why it stopped
    assert "loss is nan" in proc.stderr  # rank 1 names the value
    assert not out.exists()


@pytest.mark.multiprocess
def test_custom_samplers_are_kept_and_shared_out_across_processes(tmp_path: Path) -> None:
    common = ["--devices", "2", "--batch-size", "8", "--epochs", "2", "--dropout", "0"]
    log = tmp_path / "subset"
    assert_ok(
        run_script("--out", str(tmp_path / "a.safetensors"), "--sampler", "subset", "--index-log", str(log), *common)
    )
    ranks = [json.loads(Path(f"{log}.rank{r}.json").read_text()) for r in (0, 1)]
    for epoch in (0, 1):  # 64 rows an epoch, 32 on each process: each takes its own share, together all 64
        shares = [set(seen[32 * epoch : 32 * (epoch + 1)]) for seen in ranks]
        assert len(shares[0]) == len(shares[1]) == 32 and shares[0] | shares[1] == set(range(64))
    assert ranks[0][:32] != ranks[0][32:64]  # reseeded every epoch

    log = tmp_path / "weighted"
    assert_ok(
        run_script("--out", str(tmp_path / "b.safetensors"), "--sampler", "weighted", "--index-log", str(log), *common)
    )
    for r in (0, 1):
        assert set(json.loads(Path(f"{log}.rank{r}.json").read_text())) == {9}  # weights [0]*9 + [1] + [0]...
