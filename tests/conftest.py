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


@pytest.fixture
def clipped_update():
    """DP-SGD's step without noise, by hand: ``update(model, x, y, max_norm, lr)`` → the weights after one SGD step
    on the per-sample gradients clipped to ``max_norm`` and averaged (for checking DP plugins)."""

    def update(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, max_norm: float, lr: float) -> dict:
        total = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
        for i in range(len(x)):
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
            norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters()))
            for name, p in model.named_parameters():
                total[name] += p.grad * min(1.0, max_norm / (float(norm) + 1e-6))
        return {name: p.detach() - lr * total[name] / len(x) for name, p in model.named_parameters()}

    return update


# ---- text fixtures (nlp, and privacy's DP text runs) ----------------------------------------------------
@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a randomly initialised 2-layer BERT (hidden 32) and the MiniLM WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from tujie_nlp.encoders import load_tokenizer, quiet_transformers

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = load_tokenizer("minilm-l6")
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.1,  # BERT's 0.02 leaves a random 2-layer model nearly blind to its input
    )
    torch.manual_seed(0)
    with quiet_transformers():
        BertForMaskedLM(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
    return path


SENTIMENT = [
    ("a wonderful , moving film", "pos"),
    ("great acting and a great story", "pos"),
    ("i loved every minute", "pos"),
    ("funny , warm and wonderful", "pos"),
    ("a great , great time", "pos"),
    ("terrible plot and awful acting", "neg"),
    ("boring , dull and far too long", "neg"),
    ("i hated it", "neg"),
    ("an awful , boring mess", "neg"),
    ("dull and terrible", "neg"),
]


@pytest.fixture
def sentiment_csv(tmp_path: Path) -> Path:
    """40 rows of an easy two-class sentiment CSV (``text,label``)."""
    path = tmp_path / "sentiment.csv"
    rows = ["text,label", *(f'"{t}",{lab}' for t, lab in SENTIMENT * 4)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


APP = Path(__file__).parents[1] / "apps" / "streamlit_app.py"


@pytest.fixture(autouse=True)
def keep_main_module():
    """Streamlit's script runner (under AppTest) installs the page it runs as ``sys.modules["__main__"]`` and leaves
    it there; a later spawn/forkserver worker would then re-run that page as its main module and die. Put the real
    ``__main__`` back after every test."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture
def open_page(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """``open_page(view, runs=None, timeout=120)``: the app (apps/streamlit_app.py) under AppTest, switched to
    ``apps/views/<view>.py`` and run once, with ``runs`` as its runs folder (default: a folder that does not exist)."""
    from streamlit.testing.v1 import AppTest

    def open_(view: str, runs: Path | None = None, timeout: float = 120):
        monkeypatch.setenv("TUJIE_RUNS_DIR", str(runs if runs is not None else tmp_path / "no-runs"))
        monkeypatch.chdir(tmp_path)  # nothing the page writes lands in the checkout
        app = AppTest.from_file(str(APP), default_timeout=timeout)
        return app.switch_page(f"views/{view}.py").run()

    return open_
