"""An OpenFaaS-compatible gateway serving every function app in this process.

Routes mirror the OpenFaaS gateway: ``/function/<name>[/path]`` (synchronous),
``/async-function/<name>[/path]`` (202 + ``X-Call-Id``, run later by a bounded queue-worker),
``/system/functions`` and ``/system/function/<name>`` (basic auth, like OpenFaaS), ``/healthz``.
The replay of the shipped real data is mounted at ``/replay`` when available.

Limits, as a real deployment has them (OpenFaaS gateway + of-watchdog + queue-worker):

* ``max_inflight`` from each function's ``environment`` in ``openfaas-stack.yml``: the
  (N+1)-th concurrent request gets 429 with of-watchdog's plain-text body (of-watchdog wraps its
  handler in faas-middleware's concurrency limiter, concurrency-limiter/concurrency_limiter.go:
  ``Concurrent request limit exceeded. Max concurrent requests: N``). Unset or 0 = unlimited, as there.
* request bodies over ``POWERSENSE_GATEWAY_MAX_BODY_BYTES``: 413, decided from Content-Length when
  sent, else while reading chunk by chunk; never more than the limit is held in memory.
* async invocations: at most ``POWERSENSE_GATEWAY_ASYNC_QUEUE_SIZE`` waiting (429 beyond) and
  ``POWERSENSE_GATEWAY_ASYNC_WORKERS`` running; a worker waits for a ``max_inflight`` slot of the
  function rather than being refused (the queue absorbs bursts, as OpenFaaS's queue-worker does).
* ``X-Callback-Url``: refused (400) unless it starts with one of ``POWERSENSE_GATEWAY_CALLBACK_URLS``
  (empty by default: no callbacks), so a caller cannot make the gateway POST results anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from local_dev.functions import available, load_handler
from local_dev.stack import FunctionSpec, read_stack
from shared.errors import ConfigurationError
from shared.logs import log_event
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _send_json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _send_error(send: Send, status: int, error: str, detail: str,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """The product's error shape, ``{"error", "detail"}``, for the gateway's own refusals."""
    await _send_json(send, status, {"error": error, "detail": detail}, headers)


def max_inflight_of(spec: FunctionSpec) -> int | None:
    """The function's ``max_inflight`` (of-watchdog environment variable); None = unlimited."""
    raw = spec.environment.get("max_inflight", "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"openfaas-stack.yml: function {spec.name!r} has max_inflight={raw!r}") from exc
    if value < 0:
        raise ConfigurationError(f"openfaas-stack.yml: function {spec.name!r} has max_inflight={raw!r}")
    return value or None  # of-watchdog: 0 means no limit


class _BodyTooLarge(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The request body, chunk by chunk, refusing past ``limit`` bytes (joined once: linear time)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge(f"request body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    """A receive() that yields ``body`` once, then waits (a detached call never disconnects)."""
    sent = False

    async def receive() -> MutableMapping[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


@dataclass
class _Job:
    name: str
    app: ASGIApp
    scope: Scope
    body: bytes
    callback: str | None
    call_id: str


class Gateway:
    """Raw ASGI app: path-prefix dispatch to the function apps, OpenFaaS style, with its limits."""

    def __init__(self, settings: Settings, functions: list[str] | None = None, with_replay: bool = True) -> None:
        self.settings = settings
        self.specs: dict[str, FunctionSpec] = {s.name: s for s in read_stack()}
        names = functions if functions is not None else [n for n in available() if n in self.specs]
        self.apps: dict[str, ASGIApp] = {name: load_handler(name).app for name in names}
        self.max_inflight: dict[str, int | None] = {
            name: max_inflight_of(self.specs[name]) if name in self.specs else None for name in names
        }
        self.inflight: dict[str, int] = dict.fromkeys(names, 0)
        self._slot_freed: dict[str, asyncio.Condition] = {}
        self.replay: ASGIApp | None = None
        if with_replay:
            try:
                from local_dev.replay import create_replay_app

                self.replay = create_replay_app()
            except ImportError:
                self.replay = None
        self._queue: asyncio.Queue[_Job] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[None]] = set()

    # --- auth for /system/* ----------------------------------------------------------------------
    def _authorized(self, scope: Scope) -> bool:
        password = self.settings.gateway_password
        if password is None:
            return False  # no credential configured: /system stays closed rather than open
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        if not header.lower().startswith("basic "):
            return False
        try:
            user, _, given = base64.b64decode(header[6:]).decode().partition(":")
        except Exception:
            return False
        ok_user = hmac.compare_digest(user.encode(), self.settings.gateway_user.encode())
        ok_pass = hmac.compare_digest(given.encode(), password.get_secret_value().encode())
        return ok_user and ok_pass

    def _function_info(self, name: str) -> dict[str, Any]:
        spec = self.specs[name]
        return {
            "name": name,
            "image": spec.image,
            "namespace": "openfaas-fn",
            "replicas": 1,
            "availableReplicas": 1,
            "invocationCount": 0,
            "labels": spec.labels,
            "annotations": spec.annotations,
        }

    # --- concurrency (of-watchdog max_inflight) ----------------------------------------------------
    def _try_acquire(self, name: str) -> bool:
        # One event loop: the check and the increment cannot interleave with another request.
        limit = self.max_inflight.get(name)
        if limit is not None and self.inflight[name] >= limit:
            return False
        self.inflight[name] += 1
        return True

    async def _release(self, name: str) -> None:
        self.inflight[name] -= 1
        cond = self._slot_freed.get(name)
        if cond is not None:
            async with cond:
                cond.notify()

    async def _acquire_waiting(self, name: str) -> None:
        """For the queue-worker: wait for a slot instead of taking a 429."""
        cond = self._slot_freed.setdefault(name, asyncio.Condition())
        async with cond:
            await cond.wait_for(lambda: self._try_acquire(name))

    # --- ASGI ------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == "/healthz":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"OK"})
            return
        if path.startswith("/system/"):
            await self._system(scope, path, send)
            return
        for prefix, is_async in (("/function/", False), ("/async-function/", True)):
            if path.startswith(prefix):
                name, _, rest = path[len(prefix):].partition("/")
                app = self.apps.get(name)
                if app is None:
                    await _send_error(send, 404, "NotFoundError", f"function {name!r} not found")
                    return
                sub = dict(scope)
                # ASGI: ``path`` keeps the full path and ``root_path`` names the mount point; Starlette
                # strips one from the other for routing (mounts such as Swagger UI's assets need both).
                sub["root_path"] = scope.get("root_path", "") + prefix + name
                sub["path"] = sub["root_path"] + "/" + rest  # /function/poll reaches the function's "/"
                sub["raw_path"] = sub["path"].encode()
                headers = list(scope.get("headers") or [])
                call_id = dict(headers).get(b"x-call-id", b"").decode() or uuid.uuid4().hex
                if b"x-call-id" not in dict(headers):
                    headers.append((b"x-call-id", call_id.encode()))
                sub["headers"] = headers
                if await self._body_declared_too_large(sub, send):
                    return
                if is_async:
                    await self._enqueue(name, app, sub, receive, send, call_id)
                else:
                    await self._invoke(name, app, sub, receive, send)
                return
        if path.startswith("/replay") and self.replay is not None:
            sub = dict(scope)
            sub["path"] = path[len("/replay"):] or "/"
            sub["raw_path"] = sub["path"].encode()
            sub["root_path"] = scope.get("root_path", "") + "/replay"
            await self.replay(sub, receive, send)
            return
        await _send_error(send, 404, "NotFoundError", f"no route {path}")

    async def _body_declared_too_large(self, scope: Scope, send: Send) -> bool:
        """413 from Content-Length alone, before a byte of the body is read."""
        declared = dict(scope["headers"]).get(b"content-length")
        limit = self.settings.gateway_max_body_bytes
        try:
            too_large = declared is not None and int(declared) > limit
        except ValueError:
            too_large = False
        if too_large:
            await _send_error(send, 413, "PayloadTooLarge", f"request body over {limit} bytes")
        return too_large

    async def _read_body_or_refuse(self, receive: Receive, send: Send) -> bytes | None:
        """The request body, or None once answered 413 (over the limit) or the client has gone."""
        try:
            return await _read_body(receive, self.settings.gateway_max_body_bytes)
        except _BodyTooLarge as exc:
            await _send_error(send, 413, "PayloadTooLarge", str(exc))
        except ConnectionError:
            pass
        return None

    async def _invoke(self, name: str, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Synchronous call: 429 past max_inflight, 413 past the body limit, else the function's answer."""
        if not self._try_acquire(name):
            refusal = f"Concurrent request limit exceeded. Max concurrent requests: {self.max_inflight[name]}\n"
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "http.response.body", "body": refusal.encode()})
            log_event(log, "invocation_throttled", logging.WARNING, path=scope["root_path"],
                      max_inflight=self.max_inflight[name])
            return
        try:
            body = await self._read_body_or_refuse(receive, send)
            if body is not None:
                await app(scope, _replay(body), send)
        finally:
            await self._release(name)

    # --- async (queue-worker) ------------------------------------------------------------------------
    def _callback_allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        for allowed in self.settings.gateway_callback_urls:
            a = urlsplit(allowed)
            # same scheme and host:port, and a path under the allowed one (never a string prefix of the
            # host: http://ok.example must not admit http://ok.example.evil)
            if (parts.scheme, parts.netloc.lower()) == (a.scheme, a.netloc.lower()) and (
                parts.path == a.path or parts.path.startswith(a.path.rstrip("/") + "/")
            ):
                return True
        return False

    def _ensure_workers(self) -> asyncio.Queue[_Job]:
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=self.settings.gateway_async_queue_size)
            self._workers = [asyncio.create_task(self._worker(self._queue))
                             for _ in range(self.settings.gateway_async_workers)]
        return self._queue

    async def _enqueue(self, name: str, app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                       call_id: str) -> None:
        """Accept (202 + X-Call-Id) into the bounded queue, or refuse: 400 bad callback, 413, 429 full."""
        callback = dict(scope["headers"]).get(b"x-callback-url", b"").decode("latin-1") or None
        if callback is not None and not self._callback_allowed(callback):
            await _send_error(send, 400, "BadRequestError",
                              "X-Callback-Url not allowed (POWERSENSE_GATEWAY_CALLBACK_URLS lists allowed prefixes)")
            return
        queue = self._ensure_workers()
        if queue.full():
            await _send_error(send, 429, "QueueFull",
                              f"async queue full ({queue.maxsize} invocations waiting); retry later",
                              [(b"retry-after", b"5")])
            return
        body = await self._read_body_or_refuse(receive, send)
        if body is None:
            return
        scope = dict(scope)
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"x-callback-url"]
        try:
            queue.put_nowait(_Job(name, app, scope, body, callback, call_id))
        except asyncio.QueueFull:  # filled while this body was being read
            await _send_error(send, 429, "QueueFull", f"async queue full ({queue.maxsize} invocations waiting)",
                              [(b"retry-after", b"5")])
            return
        log_event(log, "async_invocation_queued", path=scope["root_path"], call_id=call_id, pending=queue.qsize())
        await send({"type": "http.response.start", "status": 202, "headers": [(b"x-call-id", call_id.encode())]})
        await send({"type": "http.response.body", "body": b""})

    async def _worker(self, queue: asyncio.Queue[_Job]) -> None:
        while True:
            job = await queue.get()
            try:
                await self._acquire_waiting(job.name)
                # shielded: stopping the worker (shutdown) lets the running invocation finish
                run = asyncio.create_task(self._run_job(job))
                self._running.add(run)
                run.add_done_callback(self._running.discard)
                await asyncio.shield(run)
            finally:
                queue.task_done()

    async def _run_job(self, job: _Job) -> None:
        try:
            await self._run_detached(job)
        except Exception:
            log.exception("async_invocation_failed",
                          extra={"event": "async_invocation_failed", "call_id": job.call_id})
        finally:
            await self._release(job.name)

    async def _run_detached(self, job: _Job) -> None:
        status = 500
        chunks: list[bytes] = []

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await job.app(job.scope, _replay(job.body), send)
        log_event(log, "async_invocation_done", path=job.scope["root_path"], status=status, call_id=job.call_id)
        if job.callback:
            try:
                async with httpx.AsyncClient(timeout=10, follow_redirects=False) as client:
                    await client.post(job.callback, content=b"".join(chunks),
                                      headers={"X-Call-Id": job.call_id, "X-Function-Status": str(status)})
            except httpx.HTTPError as exc:
                log_event(log, "callback_failed", logging.WARNING, error=str(exc), call_id=job.call_id)

    async def _system(self, scope: Scope, path: str, send: Send) -> None:
        if not self._authorized(scope):
            await _send_error(send, 401, "AuthError", "unauthorized",
                              [(b"www-authenticate", b'Basic realm="Restricted"')])
            return
        if path == "/system/functions" and scope["method"] == "GET":
            await _send_json(send, 200, [self._function_info(n) for n in self.apps])
            return
        if path.startswith("/system/function/") and scope["method"] == "GET":
            name = path[len("/system/function/"):]
            if name in self.apps:
                await _send_json(send, 200, self._function_info(name))
            else:
                await _send_error(send, 404, "NotFoundError", f"function {name!r} not found")
            return
        await _send_error(send, 404, "NotFoundError", f"no route {path}")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _shutdown(self) -> None:
        """Let running async invocations finish; those still queued are dropped (logged)."""
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        pending = self._queue.qsize() if self._queue is not None else 0
        if pending:
            log_event(log, "async_invocations_dropped", logging.WARNING, pending=pending)


def create_gateway_app(functions: list[str] | None = None, with_replay: bool = True) -> Gateway:
    """The gateway over every function found in functions/ and listed in openfaas-stack.yml."""
    return Gateway(get_settings(), functions, with_replay)
