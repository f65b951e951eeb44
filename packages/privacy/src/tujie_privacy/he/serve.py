"""Run the encrypted-inference service: in the foreground (the CLI) or on a background thread (tests, the demo,
the app, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping

import uvicorn

from tujie_privacy.he.model import HEModel
from tujie_privacy.he.server import ServiceLimits, create_app


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_until_serving(url: str, timeout: float = 60.0) -> None:
    """Block until the service at ``url`` answers ``/health`` (a server started in another process)."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"{url}/health", timeout=5.0).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no encrypted-inference service answered at {url} within {timeout:.0f} s") from None
            time.sleep(0.1)


def _config(models: Mapping[str, HEModel], host: str, port: int, limits: ServiceLimits | None) -> uvicorn.Config:
    # access_log: method, path and status only (no payloads ever reach a log)
    return uvicorn.Config(create_app(models, limits), host=host, port=port, log_level="warning", access_log=False)


def serve(
    models: Mapping[str, HEModel], host: str = "127.0.0.1", port: int = 8000, limits: ServiceLimits | None = None
) -> None:
    """Serve until interrupted. Localhost by default: put TLS in front (a reverse proxy) before any other host."""
    uvicorn.Server(_config(models, host, port, limits)).run()


class BackgroundServer:
    """The service on a free localhost port in a daemon thread; ``url`` once started. A context manager."""

    def __init__(self, models: Mapping[str, HEModel], limits: ServiceLimits | None = None, port: int = 0) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(_config(models, "127.0.0.1", self.port, limits))
        self.thread = threading.Thread(target=self.server.run, name="he-server", daemon=True)

    @property
    def app(self):
        return self.server.config.app

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the encrypted-inference server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
