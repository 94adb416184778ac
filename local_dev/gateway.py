"""An OpenFaaS-compatible gateway serving every function app in this process.

Routes mirror the OpenFaaS gateway: ``/function/<name>[/path]`` (synchronous),
``/async-function/<name>[/path]`` (202 + optional ``X-Callback-Url``), ``/system/functions`` and
``/system/function/<name>`` (basic auth, like OpenFaaS), ``/healthz``. The replay of the shipped
real data is mounted at ``/replay`` when available.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx

from local_dev.functions import available, load_handler
from local_dev.stack import FunctionSpec, read_stack
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


class Gateway:
    """Raw ASGI app: path-prefix dispatch to the function apps, OpenFaaS style."""

    def __init__(self, settings: Settings, functions: list[str] | None = None, with_replay: bool = True) -> None:
        self.settings = settings
        self.specs: dict[str, FunctionSpec] = {s.name: s for s in read_stack()}
        names = functions if functions is not None else [n for n in available() if n in self.specs]
        self.apps: dict[str, ASGIApp] = {name: load_handler(name).app for name in names}
        self.replay: ASGIApp | None = None
        if with_replay:
            try:
                from local_dev.replay import create_replay_app

                self.replay = create_replay_app()
            except ImportError:
                self.replay = None
        self._background: set[asyncio.Task[None]] = set()

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
                    await _send_json(send, 404, {"error": f"function {name!r} not found"})
                    return
                sub = dict(scope)
                sub["path"] = "/" + rest
                sub["raw_path"] = sub["path"].encode()
                sub["root_path"] = scope.get("root_path", "") + prefix + name
                headers = list(scope.get("headers") or [])
                call_id = dict(headers).get(b"x-call-id", b"").decode() or uuid.uuid4().hex
                if b"x-call-id" not in dict(headers):
                    headers.append((b"x-call-id", call_id.encode()))
                sub["headers"] = headers
                if is_async:
                    await self._invoke_async(app, sub, receive, send, call_id)
                else:
                    await app(sub, receive, send)
                return
        if path.startswith("/replay") and self.replay is not None:
            sub = dict(scope)
            sub["path"] = path[len("/replay"):] or "/"
            sub["raw_path"] = sub["path"].encode()
            sub["root_path"] = scope.get("root_path", "") + "/replay"
            await self.replay(sub, receive, send)
            return
        await _send_json(send, 404, {"error": "not found", "path": path})

    async def _system(self, scope: Scope, path: str, send: Send) -> None:
        if not self._authorized(scope):
            await _send_json(send, 401, {"error": "unauthorized"}, [(b"www-authenticate", b'Basic realm="Restricted"')])
            return
        if path == "/system/functions" and scope["method"] == "GET":
            await _send_json(send, 200, [self._function_info(n) for n in self.apps])
            return
        if path.startswith("/system/function/") and scope["method"] == "GET":
            name = path[len("/system/function/"):]
            if name in self.apps:
                await _send_json(send, 200, self._function_info(name))
            else:
                await _send_json(send, 404, {"error": f"function {name!r} not found"})
            return
        await _send_json(send, 404, {"error": "not found", "path": path})

    async def _invoke_async(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, call_id: str) -> None:
        """Accept now (202), run later; POST the result to X-Callback-Url if given (OpenFaaS queue-worker)."""
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        callback = dict(scope["headers"]).get(b"x-callback-url", b"").decode() or None
        scope = dict(scope)
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"x-callback-url"]
        task = asyncio.create_task(self._run_detached(app, scope, body, callback, call_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        await send({"type": "http.response.start", "status": 202, "headers": [(b"x-call-id", call_id.encode())]})
        await send({"type": "http.response.body", "body": b""})

    async def _run_detached(self, app: ASGIApp, scope: Scope, body: bytes, callback: str | None, call_id: str) -> None:
        sent = False
        status = 500
        chunks: list[bytes] = []

        async def receive() -> MutableMapping[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)  # no disconnect for a detached call
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await app(scope, receive, send)
        log_event(log, "async_invocation_done", path=scope["root_path"], status=status, call_id=call_id)
        if callback:
            try:
                async with httpx.AsyncClient(timeout=10) as client:
                    await client.post(callback, content=b"".join(chunks),
                                      headers={"X-Call-Id": call_id, "X-Function-Status": str(status)})
            except httpx.HTTPError as exc:
                log_event(log, "callback_failed", logging.WARNING, error=str(exc), call_id=call_id)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._background:
                    await asyncio.gather(*self._background, return_exceptions=True)
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_gateway_app(functions: list[str] | None = None, with_replay: bool = True) -> Gateway:
    """The gateway over every function found in functions/ and listed in openfaas-stack.yml."""
    return Gateway(get_settings(), functions, with_replay)
