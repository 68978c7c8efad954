"""The README's picture of the live view: ``rtseg run --source <highway clip> --serve PORT`` with the
default model, photographed by headless chromium (Debian's; the DevTools client of the browser
tests) once its figures are filled in.

    python scripts/serve_screenshot.py --out docs/img/serve.png

The PNG is reduced to 256 colours (Pillow, from the ``plot`` extra) to stay small.
"""
from __future__ import annotations

import argparse
import io
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cdp import Chromium  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/img/serve.png")
    parser.add_argument("--after", type=float, default=12.0, help="seconds of run before the picture")
    parser.add_argument("run_args", nargs="*", help="extra `rtseg run` arguments (after --)")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "rtseg", "run", "--serve", str(port), "--quiet", *args.run_args])
    browser = None
    try:
        deadline = time.monotonic() + 600
        while True:  # the default model may be exported on its first run
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2) as r:
                    if json.load(r)["frames"] > 0:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the run ended before its first frame")
            time.sleep(0.5)
        browser = Chromium(1280, 720)
        browser.goto(f"http://127.0.0.1:{port}/")
        time.sleep(args.after)
        png = browser.screenshot()
    finally:
        if browser is not None:
            browser.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(buf, "PNG", optimize=True)
    Path(args.out).write_bytes(buf.getvalue())
    print(f"{args.out}: {len(buf.getvalue()) // 1024} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
