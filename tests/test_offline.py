"""The offline guarantees themselves: the test network guard works, and importing tujie leaves matplotlib alone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest


def test_a_non_loopback_socket_fails() -> None:
    with pytest.raises(OSError, match="only loopback is allowed"):
        socket.create_connection(("192.0.2.1", 443), timeout=1)  # TEST-NET-1: never routed
    with socket.socket() as sock, pytest.raises(OSError, match="only loopback is allowed"):
        sock.connect_ex(("198.51.100.7", 80))
    with socket.socket() as sock, pytest.raises(OSError, match="only loopback is allowed"):
        sock.connect(("huggingface.co", 443))  # a host name is refused before it is resolved


def test_loopback_still_works() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted = threading.Thread(target=lambda: server.accept()[0].close())
    accepted.start()
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    accepted.join(5)
    server.close()


def test_importing_tujie_keeps_the_matplotlib_backend() -> None:
    code = (
        "import matplotlib; import tujie_core, tujie_core.report, tujie_core.tune, tujie_core.cli; "
        "print(matplotlib.get_backend())"
    )
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "svg"
