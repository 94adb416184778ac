"""A ClickHouse HTTP interface in front of chDB, for tests of the store's server transport.

No ClickHouse server runs on the build machine, so the product's server path (clickhouse-connect's HTTP client, as
production uses it) is tested against this stand-in: a real HTTP server whose statements run in chDB, the same
engine, in a child process (chDB allows one engine per process, and the test process has its own). It implements
what ClickHouse's HTTP interface documents and the client uses: the statement in the ``query`` URL parameter and/or
the body, ``param_<name>`` as query parameters, the output format from a trailing ``FORMAT``, and every other URL
parameter that is a ClickHouse setting applied to that statement only (``SET`` on the session, reset after).
Inserts with a data body are not implemented (the tests here read and run statements).

``readonly_settings`` (``--readonly``) emulates a profile that forbids changing those settings (``readonly = 1`` in
``system.settings`` for them, and an error if a request sets one), as a ``readonly = 1`` user without a
``changeable_in_readonly`` constraint sees.

Run: ``python -m tests.chdb_http DATA_DIR PORT_FILE [--readonly NAME ...]``; it writes its port to PORT_FILE.
"""

from __future__ import annotations

import argparse
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

# URL parameters of the HTTP interface that are not settings (ClickHouse docs, "HTTP interface")
TRANSPORT = {"query", "query_id", "session_id", "session_timeout", "session_check", "database", "default_format",
             "user", "password", "compress", "decompress", "quota_key", "buffer_size", "wait_end_of_query",
             "client_protocol_version", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
             "cancel_http_readonly_queries_on_client_close", "enable_http_compression"}
SETTINGS_SQL = "SELECT name, value, readonly FROM system.settings"


def serve(data_dir: str, port_file: str, readonly: set[str]) -> None:
    """Serve until killed."""
    from chdb import session

    sess = session.Session(data_dir)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: bytes, fmt: str = "TabSeparated") -> None:
            self.send_response(status)
            self.send_header("X-ClickHouse-Format", fmt)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _run(self, body: bytes) -> None:
            url = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query, keep_blank_values=True).items()}
            sql = (url.get("query", "") + "\n" + body.decode()).strip()
            params = {k[len("param_"):]: v for k, v in url.items() if k.startswith("param_")}
            settings = {k: v for k, v in url.items() if k not in TRANSPORT and not k.startswith("param_")}
            refused = sorted(set(settings) & readonly)
            if refused:
                self._answer(500, f"Code: 164. DB::Exception: Cannot modify '{refused[0]}' setting in readonly "
                                  "mode. (READONLY)".encode())
                return
            fmt = "TabSeparated"
            m = re.search(r"\bFORMAT\s+(\w+)\s*$", sql, re.IGNORECASE)
            if m:
                fmt, sql = m.group(1), sql[: m.start()]
            if sql.startswith(SETTINGS_SQL) and readonly:
                names = ", ".join(f"'{n}'" for n in sorted(readonly))
                sql = sql.replace("readonly FROM", f"if(name in ({names}), 1, readonly) as readonly FROM", 1)
            with lock:
                try:
                    for k, v in settings.items():
                        sess.query(f"SET {k} = '{v}'")
                    out = sess.query(sql, fmt, params=params or None).bytes()
                    status = 200
                except Exception as exc:  # the engine's error, as the server sends it
                    out, status = str(exc).encode(), 500
                finally:
                    for k in settings:
                        sess.query(f"SET {k} = DEFAULT")
            self._answer(status, out, fmt)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self._run(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        def do_GET(self) -> None:  # noqa: N802
            self._run(b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Path(port_file).write_text(str(server.server_port))
    server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("data_dir")
    p.add_argument("port_file")
    p.add_argument("--readonly", nargs="*", default=[])
    a = p.parse_args()
    serve(a.data_dir, a.port_file, set(a.readonly))
