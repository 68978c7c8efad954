"""A served ``rtseg run`` for the live-view tests: a real process on a real (ffmpeg-served, looping)
stream, and a raw MJPEG viewer that reads exactly as much as a test asks for."""
from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

from conftest import CLIP
from stream_helpers import StreamServer, free_port, start_run, wait_for

# A small shipped model in torch: no export, quick on two shared cores (as in test_run_endings).
MODEL = ["--model", "enet_camvid", "--backend", "torch", "--size", "180x240", "--threads", "1"]


def get_json(url: str, timeout: float = 10) -> tuple[int, dict]:
    """(status, body) of a GET or of an HTTP error that carries a JSON body."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def post_json(url: str, body: dict | None = None, timeout: float = 10) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


class ServedRun:
    """``rtseg run --source <looping stream> --serve PORT ...`` until :meth:`stop`."""

    def __init__(self, *extra: str, seconds: float = 600):
        self.stream = StreamServer(CLIP, seconds=seconds, loop=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output: tuple[str, str] | None = None
        self.proc = start_run("--source", self.stream.url, *MODEL, "--serve", str(self.port), *extra)
        wait_for(self._frames_flow, self.proc, what="the first frames on /stats")

    def _frames_flow(self) -> bool:
        try:
            return get_json(self.url + "/stats", timeout=2)[1]["frames"] >= 2
        except (OSError, ValueError):
            return False

    def stats(self) -> dict:
        return get_json(self.url + "/stats")[1]

    def stop(self, sig) -> tuple[str, str]:
        """Sends ``sig`` unless the process has ended; returns its (stdout, stderr)."""
        if self.output is None:
            try:
                if self.proc.poll() is None:
                    self.proc.send_signal(sig)
                self.output = self.proc.communicate(timeout=120)
            finally:
                self.stream.close()
        return self.output


class Viewer:
    """A raw ``GET /stream.mjpg`` that parses the multipart stream part by part."""

    def __init__(self, port: int, rcvbuf: int | None = None):
        self.sock = socket.socket()
        if rcvbuf:  # a small window: a viewer that stops reading stalls the server's writes fast
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        self.buf = b""
        head = self._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200") and b"multipart/x-mixed-replace" in head, head

    def _fill(self) -> bool:
        chunk = self.sock.recv(1 << 16)
        self.buf += chunk
        return bool(chunk)

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not self._fill():
                raise EOFError("the stream ended")
        head, self.buf = self.buf.split(marker, 1)
        return head

    def frame(self) -> bytes:
        """The next JPEG."""
        head = self._until(b"\r\n\r\n").decode()
        length = int(next(ln.split(":")[1] for ln in head.splitlines() if ln.lower().startswith("content-length")))
        while len(self.buf) < length + 2:
            if not self._fill():
                raise EOFError("the stream ended inside a frame")
        data, self.buf = self.buf[:length], self.buf[length + 2:]
        return data

    def half_frame_then_close(self) -> None:
        """Leaves in the middle of a JPEG, as a closed browser tab does."""
        self._until(b"\r\n\r\n")
        self.sock.close()

    def ended(self, timeout: float = 30) -> bool:
        """True once the server closed the stream (EOF)."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(1)
        while time.monotonic() < deadline:
            try:
                if not self._fill():
                    return True
                self.buf = b""
            except socket.timeout:
                continue
            except OSError:
                return True
        return False

    def close(self) -> None:
        self.sock.close()


def refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


__all__ = ["MODEL", "ServedRun", "Viewer", "free_port", "get_json", "post_json", "refused"]
