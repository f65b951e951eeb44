"""The encrypted-inference service: an HTTP server (FastAPI) that evaluates compiled models on CKKS ciphertexts.

Protocol (bodies are TenSEAL serialisations, ``application/octet-stream``):

- ``GET /models``: each model's input and output sizes, depth and the CKKS parameters it needs;
- ``POST /sessions?model=NAME`` with the client's *public* context (no secret key; checked) → ``{"session": ID}``;
- ``POST /sessions/{ID}/predict`` with a batched CKKS tensor of shape ``(input_dim,)`` → the encrypted outputs;
- ``DELETE /sessions/{ID}``.

The server never holds a secret key, so it can neither read the inputs nor the results; it keeps no payload after a
request and logs only sizes and timings. Limits (:class:`ServiceLimits`) bound request and context sizes, sessions
and concurrent evaluations; sessions expire after ``session_ttl`` seconds idle. Anything malformed, truncated,
oversized or made for other parameters is answered with a 4xx naming the problem; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import tenseal as ts
from fastapi import FastAPI, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from tujie_core.inference import release_memory
from tujie_privacy.he.model import HEModel
from tujie_privacy.he.params import ParameterError, check_context, context_facts

log = logging.getLogger("tujie_privacy.he")
OCTET = "application/octet-stream"
MiB = 1 << 20


@dataclass(frozen=True)
class ServiceLimits:
    """What one server accepts. Sizes in bytes; ``session_ttl`` in seconds of inactivity."""

    max_request_bytes: int = 256 * MiB
    max_context_bytes: int = 32 * MiB
    max_sessions: int = 32
    session_ttl: float = 600.0
    max_concurrent: int = 2  # evaluations at once (one per core); others wait their turn


@dataclass
class Session:
    model: str
    context: ts.Context
    facts: dict[str, Any]
    last_used: float = field(default_factory=time.monotonic)
    requests: int = 0


class SessionStore:
    """Sessions by unguessable id, expired after ``session_ttl`` seconds idle (swept on every access and by the
    app every min(ttl, 60) s)."""

    def __init__(self, limits: ServiceLimits) -> None:
        self.limits = limits
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, session: Session) -> str:
        with self._lock:
            self._sweep()
            if len(self._sessions) >= self.limits.max_sessions:
                raise HTTPException(429, f"too many sessions ({self.limits.max_sessions}); close one or retry later")
            key = secrets.token_urlsafe(18)
            self._sessions[key] = session
            return key

    def get(self, key: str) -> Session:
        with self._lock:
            self._sweep()
            session = self._sessions.get(key)
            if session is None:
                raise HTTPException(404, "unknown or expired session: open a new one (POST /sessions)")
            session.last_used = time.monotonic()
            return session

    def remove(self, key: str) -> bool:
        with self._lock:
            found = self._sessions.pop(key, None) is not None
        if found:
            release_memory()
        return found

    def sweep(self) -> None:
        """Drop expired sessions now (also done on every access)."""
        with self._lock:
            self._sweep()

    def _sweep(self) -> None:
        now = time.monotonic()
        expired = [k for k, s in self._sessions.items() if now - s.last_used > self.limits.session_ttl]
        for key in expired:
            del self._sessions[key]
        if expired:
            log.info("expired %d session(s)", len(expired))
            release_memory()


def model_info(name: str, model: HEModel) -> dict[str, Any]:
    return {
        "name": name,
        "function": model.describe(),
        "input_dim": model.input_dim,
        "output_dim": model.output_dim,
        "output": model.output,
        "depth": model.depth,
        "value_bits": model.value_bits,
        "multiplies_ciphertexts": model.multiplies_ciphertexts,
        "parameters": model.parameters().to_dict(),
        "class_names": model.meta.get("class_names", []),
        "feature_names": model.meta.get("feature_names", []),
    }


async def _body(request: Request, limit: int, what: str) -> bytes:
    """The request body, refused with 413 past ``limit`` (declared or streamed) and 400 when empty."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"{what} of {int(declared)} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"{what} is over the limit of {limit} bytes")
        chunks.append(chunk)
    if size == 0:
        raise HTTPException(400, f"empty {what}")
    return b"".join(chunks)


def create_app(models: Mapping[str, HEModel], limits: ServiceLimits | None = None) -> FastAPI:
    """The service over ``models`` (name → compiled model)."""
    limits = limits or ServiceLimits()
    if not models:
        raise ValueError("the service needs at least one model")
    store = SessionStore(limits)
    gate = threading.BoundedSemaphore(limits.max_concurrent)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async def sweeper() -> None:  # idle sessions give their memory back even when no request comes
            while True:
                await asyncio.sleep(min(limits.session_ttl, 60.0))
                store.sweep()

        task = asyncio.create_task(sweeper())
        yield
        task.cancel()

    app = FastAPI(title="tujie encrypted inference", version="1", lifespan=lifespan)
    app.state.store = store
    app.state.limits = limits

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "models": sorted(models), "sessions": len(store)}

    @app.get("/models")
    def list_models() -> list[dict[str, Any]]:
        return [model_info(name, model) for name, model in models.items()]

    @app.get("/limits")
    def get_limits() -> dict[str, Any]:
        return asdict(limits)

    @app.post("/sessions")
    async def open_session(request: Request, model: str) -> dict[str, Any]:
        if model not in models:
            raise HTTPException(404, f"unknown model '{model}' (served: {', '.join(sorted(models))})")
        blob = await _body(request, limits.max_context_bytes, "context")
        session = await run_in_threadpool(_session, models[model], model, blob)
        key = store.add(session)
        log.info("session %s… opened for %s: %s", key[:6], model, session.facts)
        return {"session": key, "expires_after_idle_s": limits.session_ttl, "context_bytes": len(blob)}

    @app.post("/sessions/{key}/predict")
    async def predict(key: str, request: Request) -> Response:
        session = store.get(key)
        blob = await _body(request, limits.max_request_bytes, "ciphertext batch")
        started = time.perf_counter()
        result = await run_in_threadpool(_evaluate, gate, models[session.model], session, blob)
        session.requests += 1
        log.info(
            "session %s…: %d bytes in, %d out, %.0f ms",
            key[:6],
            len(blob),
            len(result),
            1e3 * (time.perf_counter() - started),
        )
        return Response(result, media_type=OCTET)

    @app.delete("/sessions/{key}")
    def close_session(key: str) -> dict[str, Any]:
        if not store.remove(key):
            raise HTTPException(404, "unknown or expired session")
        return {"closed": True}

    return app


def _session(model: HEModel, name: str, blob: bytes) -> Session:
    try:
        context = ts.context_from(blob)
        facts = context_facts(context)
    except Exception as exc:  # TenSEAL/SEAL raise ValueError, RuntimeError or their own types on bad bytes
        raise HTTPException(400, f"not a TenSEAL CKKS context ({type(exc).__name__}: {str(exc)[:120]})") from None
    try:
        check_context(facts, model.depth, model.value_bits, model.multiplies_ciphertexts)
    except ParameterError as exc:
        raise HTTPException(422, str(exc)) from None
    return Session(name, context, facts.to_dict())


def _evaluate(gate: threading.BoundedSemaphore, model: HEModel, session: Session, blob: bytes) -> bytes:
    """Parse and evaluate under the gate: at most ``max_concurrent`` batches live in SEAL's memory at once (its pool
    keeps what it once held, so this bounds the server's memory as well as its CPU)."""
    with gate:
        try:
            tensor = ts.ckks_tensor_from(session.context, blob)
        except Exception as exc:
            raise HTTPException(
                400, f"not a CKKS tensor for this session's context ({type(exc).__name__}: {str(exc)[:120]})"
            ) from None
        if tensor.shape != [model.input_dim]:
            raise HTTPException(
                422,
                f"the batch has shape {tensor.shape}; the model takes {model.input_dim} features (one ciphertext each)",
            )
        try:
            result = model.encrypted(tensor)
        except ValueError as exc:  # scale out of bounds, end of the modulus chain, ...
            raise HTTPException(422, f"cannot evaluate on this ciphertext: {str(exc)[:160]}") from None
        return result.serialize()
