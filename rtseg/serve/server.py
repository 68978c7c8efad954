"""The HTTP side of ``rtseg run --serve``: the page, the MJPEG stream, ``/stats``, ``/healthz``,
and the controls, on the standard library's threading HTTP server (no extra dependency).

Endpoints:
    GET  /             the page (``page.html``: no build step, no CDN, works offline)
    GET  /stream.mjpg  ``multipart/x-mixed-replace`` JPEGs, the newest frame each time
    GET  /stats        JSON figures (see ``Hub.figures``)
    GET  /healthz      ``{"state": ...}``; 200 while starting, running or paused, 503 once stalled or ended
    POST /control      JSON ``{"mode": "overlay|mask|side", "alpha": 0..1, "paused": bool}`` (any subset)
    POST /snapshot     writes the current frame, overlay and mask; returns ``{"files": [...]}``

The socket is bound when the server is created, before the model loads, so a port in use is a
one-line error that costs nothing. Every connection has a timeout, and closing the server shuts
down the sockets of viewers still attached, so no ending of the run waits on a browser.
"""
from __future__ import annotations

import contextlib
import errno
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from rtseg.errors import RtsegError
from rtseg.pipeline.runner import yield_to_inference
from rtseg.serve.hub import Hub

BOUNDARY = "rtsegframe"
DEFAULT_HOST = "127.0.0.1"
CONNECTION_TIMEOUT_S = 20.0  # a viewer that takes no data for this long is dropped
MAX_BODY = 4096              # control requests are a few bytes
# The kernel's send buffer per viewer: a stalled browser holds at most a couple of frames there
# (autotuning would let it grow to megabytes, a backlog of seconds), yet 256 kB per round trip
# still carries 25 frames/s of 100 kB over a 100 ms link.
STREAM_SNDBUF = 1 << 18


class ServeError(RtsegError):
    """``--serve`` cannot listen: a malformed address, a port in use, no permission."""


def parse_address(text: str) -> tuple[str, int]:
    """``"8080"`` -> ``("127.0.0.1", 8080)``; ``"0.0.0.0:8080"``; ``"[::1]:8080"``."""
    host, sep, port = str(text).rpartition(":")
    host = host.strip("[]") if sep else DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) <= 65535 or (sep and not host):
        raise ServeError(f"--serve takes [HOST:]PORT (e.g. 8080 or 0.0.0.0:8080), got '{text}'")
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], hub: Hub):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.hub = hub
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = CONNECTION_TIMEOUT_S
    server_version = "rtseg"

    def setup(self) -> None:
        super().setup()
        yield_to_inference()  # serving a viewer never takes cores from the model
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the viewer left; nothing to flush to
        with self.server.lock:
            self.server.connections.discard(self.connection)

    def log_message(self, *args) -> None:
        pass  # the library never prints; requests are not worth a line each

    def _json(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        hub = self.server.hub
        path = self.path.split("?", 1)[0]
        try:
            if path == "/":
                page = resources.files("rtseg.serve").joinpath("page.html").read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(page)
            elif path == "/stream.mjpg":
                self._stream(hub)
            elif path == "/stats":
                self._json(hub.figures())
            elif path == "/healthz":
                healthy, body = hub.health()
                self._json(body, 200 if healthy else 503)
            else:
                self._json({"error": f"no such page: {path}"}, 404)
        except (OSError, ValueError):
            pass  # the viewer closed the connection or timed out; the pipeline never notices

    def _stream(self, hub: Hub) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        # closing(): a viewer that left is uncounted at once, not when the generator is collected.
        with contextlib.closing(hub.frames()) as frames:
            for data, t_capture in frames:
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                                 .encode() + data + b"\r\n")
                self.wfile.flush()
                hub.delivered(t_capture)

    def do_POST(self) -> None:  # noqa: N802
        hub = self.server.hub
        path = self.path.split("?", 1)[0]
        try:
            if path not in ("/control", "/snapshot"):
                self._json({"error": f"no such action: {path}"}, 404)
                return
            if self.headers.get_content_type() != "application/json":
                # A JSON type makes a browser ask first (CORS preflight, which this server never
                # grants), so another web site open in the same browser cannot steer the run.
                self._json({"error": "send Content-Type: application/json"}, 415)
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._json({"error": "request too large"}, 413)
                return
            body = self.rfile.read(length) if length else b""
            try:
                if path == "/control":
                    changes = json.loads(body or b"{}")
                    if not isinstance(changes, dict):
                        raise RtsegError("the body must be a JSON object")
                    self._json(hub.control(changes))
                else:
                    self._json({"files": hub.snapshot()})
            except json.JSONDecodeError:
                self._json({"error": "the body is not JSON"}, 400)
            except RtsegError as e:
                self._json({"error": str(e)}, 400 if path == "/control" else 409)
        except (OSError, ValueError):
            pass


class LiveServer:
    """Binds at construction (so a port in use fails before any work), serves from a thread.

    Args:
        address: ``[HOST:]PORT`` as given to ``--serve``.
        hub: the shared state the handlers read and steer.
    """

    def __init__(self, address: str, hub: Hub):
        host, port = parse_address(address)
        self.hub = hub
        try:
            self.httpd = _Server((host, port), hub)
        except socket.gaierror:
            raise ServeError(f"--serve {address}: unknown host '{host}'") from None
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ServeError(f"--serve {address}: port {port} is already in use on {host}; "
                                 f"choose another, e.g. --serve {port + 1}") from None
            raise ServeError(f"--serve {address}: cannot listen: {e.strerror or e}") from None
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="rtseg-serve", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        """Ends the streams, stops accepting, and drops the connections that are left."""
        self.hub.end()
        self.httpd.shutdown()
        self._thread.join()
        self.httpd.server_close()
        with self.httpd.lock:
            left = list(self.httpd.connections)
        for conn in left:  # a viewer blocked in a write to a stalled browser
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
