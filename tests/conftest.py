"""Shared test setup: offline everywhere, tiny data and models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "true")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import ipaddress
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset


class NetworkBlocked(OSError):
    """A test tried to reach a non-loopback address: library code must not touch the network unless asked."""


def _is_loopback(address: object) -> bool:
    if isinstance(address, str):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:  # a host name: resolving it would already leave the machine
        return False


def _guarded(connect):
    def guarded(sock: socket.socket, address, *args):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise NetworkBlocked(f"test tried to connect to {address!r}: only loopback is allowed in tests")
        return connect(sock, address, *args)

    return guarded


@pytest.fixture(autouse=True, scope="session")
def block_network():
    """Every test runs with sockets limited to loopback (DDP's 127.0.0.1 and local services still work), so no
    test passes by luck of an environment variable."""
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex
    socket.socket.connect = _guarded(connect)
    socket.socket.connect_ex = _guarded(connect_ex)
    yield
    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex


@pytest.fixture
def blobs() -> TensorDataset:
    """120 points in 3 separable Gaussian blobs, 4 features."""
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    y = torch.arange(120) % 3
    x = centers[y] + 0.7 * torch.randn(120, 4, generator=g)
    return TensorDataset(x, y)


@pytest.fixture
def blob_loaders(blobs: TensorDataset) -> tuple[DataLoader, DataLoader]:
    train = TensorDataset(*blobs[:90])
    val = TensorDataset(*blobs[90:])
    return DataLoader(train, batch_size=16, shuffle=True), DataLoader(val, batch_size=32)


@pytest.fixture
def tujie(capsys, monkeypatch):
    """Run the CLI in this process (as the console script would) and return (exit code, stdout, stderr)."""

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["tujie", *args])
        capsys.readouterr()
        from tujie_core import cli

        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run
