"""The client side: keys, encryption and decryption stay here; only the public context and ciphertexts leave.

>>> keys = HEClient(model.parameters())               # doctest: +SKIP
>>> outputs = keys.decrypt(model.encrypted(keys.encrypt(x)), len(x))   # in one process, for testing
>>> with ServiceClient("http://127.0.0.1:8000", "risk") as service:   # doctest: +SKIP
...     logits = service.predict(x)
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import tenseal as ts

from tujie_core import DataError
from tujie_privacy.he.params import CKKSParameters, choose_parameters

OCTET = {"content-type": "application/octet-stream"}


class HEClient:
    """A CKKS key pair for one set of parameters: encrypts ``(n, features)`` batches feature-major (one ciphertext
    per feature, up to ``slots`` samples in each) and decrypts results. The secret key never leaves this object:
    :meth:`public_context` serialises the context without it."""

    def __init__(self, parameters: CKKSParameters) -> None:
        self.parameters = parameters
        self._context = parameters.context()

    @property
    def slots(self) -> int:
        return self.parameters.slots

    def public_context(self) -> bytes:
        """The context a server needs: public and relinearisation keys, no secret key, no Galois keys."""
        public = self._context.copy()
        public.make_context_public()
        assert not public.is_private()
        return public.serialize(save_galois_keys=False)

    def encrypt(self, x: np.ndarray) -> ts.CKKSTensor:
        """One batch of at most ``slots`` samples as a CKKS tensor of shape ``(features,)``."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or not 1 <= len(x) <= self.slots:
            raise DataError(f"encrypt takes (1 to {self.slots} samples, features); got shape {x.shape}")
        return ts.ckks_tensor(self._context, ts.plain_tensor(x), batch=True)

    def decrypt(self, result: ts.CKKSTensor | bytes, samples: int) -> np.ndarray:
        """``(samples, outputs)`` from an encrypted result (a tensor or its serialisation)."""
        if isinstance(result, bytes):
            result = ts.ckks_tensor_from(self._context, result)
        else:
            result.link_context(self._context)
        values = np.asarray(result.decrypt().tolist(), dtype=np.float64)
        return values.reshape(values.shape[0], -1)[:samples] if values.ndim > 1 else values[:samples, None]


@dataclass
class Timing:
    """Where the time of the requests so far went (seconds) and the bytes that crossed the wire."""

    encrypt: float = 0.0
    server: float = 0.0  # request sent → response received (upload, evaluation, download)
    decrypt: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    context_bytes: int = 0
    requests: list[float] = field(default_factory=list)  # each request's round trip


class ServiceError(RuntimeError):
    """The server refused a request: its status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"server answered {status}: {message}")
        self.status = status


class ServiceClient:
    """A session with an encrypted-inference server for one model: generates keys for the model's parameters,
    sends the public context once, then encrypts, sends and decrypts batches. Use as a context manager (closes the
    session) or call :meth:`close`."""

    def __init__(self, url: str, model: str | None = None, *, security: int = 128, timeout: float = 300.0) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
        served = self._json("GET", "/models")
        names = [m["name"] for m in served]
        if model is None and len(served) != 1:
            raise DataError(f"the server has {len(served)} models ({', '.join(names)}): name one")
        if model is not None and model not in names:
            raise DataError(f"the server has no model '{model}' (it serves: {', '.join(names)})")
        self.info: dict[str, Any] = next(m for m in served if model in (None, m["name"]))
        self.parameters = choose_parameters(self.info["depth"], self.info["value_bits"], security)
        self.keys = HEClient(self.parameters)
        self.timing = Timing()
        context = self.keys.public_context()
        self.timing.context_bytes = len(context)
        self.session = self._json("POST", "/sessions", params={"model": self.info["name"]}, content=context)["session"]

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ServiceError(response.status_code, str(detail))
        return response

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Raw model outputs ``(n, outputs)`` (logits or values) for ``(n, input_dim)`` features, in batches of
        the ciphertexts' slot count."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.info["input_dim"]:
            raise DataError(f"the model takes (n, {self.info['input_dim']}) features; got shape {x.shape}")
        outputs = []
        for start in range(0, len(x), self.keys.slots):
            batch = x[start : start + self.keys.slots]
            began = time.perf_counter()
            blob = self.keys.encrypt(batch).serialize()
            sent = time.perf_counter()
            answer = self._send(
                "POST",
                f"/sessions/{self.session}/predict",
                content=blob,
                headers={"content-type": "application/octet-stream"},
            ).content
            received = time.perf_counter()
            outputs.append(self.keys.decrypt(answer, len(batch)))
            done = time.perf_counter()
            self.timing.encrypt += sent - began
            self.timing.server += received - sent
            self.timing.decrypt += done - received
            self.timing.bytes_sent += len(blob)
            self.timing.bytes_received += len(answer)
            self.timing.requests.append(done - began)
        return np.concatenate(outputs) if outputs else np.zeros((0, self.info["output_dim"]))

    def close(self) -> None:
        with contextlib.suppress(ServiceError, httpx.HTTPError):  # expired, or the server is gone: nothing to free
            self._send("DELETE", f"/sessions/{self.session}")
        self.http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
