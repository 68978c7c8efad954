"""``rtseg run --serve [HOST:]PORT``: the live overlay and its figures in a browser, steerable.

``hub.py`` holds what the pipeline and the browsers share (newest frame, JPEG, controls, figures);
``server.py`` is the HTTP server; ``page.html`` the page it serves. Standard library only.
"""
from __future__ import annotations

from pathlib import Path

from rtseg.pipeline.overlay import Style
from rtseg.serve.hub import Hub, ServeSink
from rtseg.serve.server import LiveServer, ServeError, parse_address

__all__ = ["Hub", "LiveServer", "ServeError", "ServeSink", "open_server", "parse_address"]


def open_server(address: str, style: Style, snapshot_dir: str | Path) -> LiveServer:
    """Binds ``address`` and starts serving (the page waits for the first frame).

    Raises:
        ServeError: a malformed address, a port in use, no permission to listen.
    """
    hub = Hub(style, snapshot_dir)
    try:
        return LiveServer(address, hub)
    except BaseException:
        hub.end()
        raise
