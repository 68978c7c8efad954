"""Real network streams for tests: the ffmpeg binary of imageio-ffmpeg serving a clip over HTTP on
127.0.0.1 (listen mode), and ``rtseg run`` as a real subprocess."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest


def ffmpeg() -> str:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="streams are served by imageio-ffmpeg's ffmpeg")
    return imageio_ffmpeg.get_ffmpeg_exe()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamServer:
    """``ffmpeg -re -i CLIP -t SECONDS -f mpegts -listen 1 http://127.0.0.1:PORT/s.ts``: serves one
    client in real time, then ends the stream cleanly (or is killed to drop it)."""

    def __init__(self, clip: Path, seconds: float, port: int | None = None, loop: bool = False):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/s.ts"
        cmd = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-re",
               *(["-stream_loop", "-1"] if loop else []), "-i", str(clip), "-t", str(seconds),
               "-c", "copy", "-f", "mpegts", "-listen", "1", self.url]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not self._listening():  # the client must find the server up
            assert self.proc.poll() is None and time.monotonic() < deadline, self.proc.stderr.read()
            time.sleep(0.05)

    def _listening(self) -> bool:
        # /proc/net/tcp lists listening sockets (state 0A) without connecting, which would use
        # up the server's one client.
        hexport = f":{self.port:04X}"
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            if any(ln.split()[1].endswith(hexport) and ln.split()[3] == "0A" for ln in lines):
                return True
        return False

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def wait(self, timeout: float = 60) -> None:
        self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.proc.stderr.close()


def start_run(*args: str, env: dict | None = None) -> subprocess.Popen:
    """``python -m rtseg run ...`` with SIGINT in its default state (a shell that starts the test
    suite in the background leaves it ignored, and Python keeps an inherited "ignore")."""
    return subprocess.Popen([sys.executable, "-m", "rtseg", "run", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate()
            raise AssertionError(f"gave up waiting for {what}: rc {proc.returncode}\n{out}\n{err}")
        time.sleep(0.1)


def count_files(folder: Path, suffix: str = ".png") -> int:
    return len([n for n in os.listdir(folder) if n.endswith(suffix)]) if folder.is_dir() else 0


def decoded_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def video_duration(path: Path) -> float:
    """Seconds the file plays, from its container (``Duration:`` of ``ffmpeg -i``)."""
    err = subprocess.run([ffmpeg(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    h, m, s = re.search(r"Duration: (\d+):(\d+):([\d.]+)", err).groups()
    return int(h) * 3600 + int(m) * 60 + float(s)
