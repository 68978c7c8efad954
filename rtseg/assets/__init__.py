"""Files that ship inside the package, so the first command runs with no data of the user's.

``highway_960x540_25fps.mp4``: a real dashcam clip, 221 frames, 960x540, 25 fps, H.264, daylight
highway. From udacity/CarND-LaneLines-P1 (``test_videos/solidWhiteRight.mp4``), MIT licence.
``rtseg run`` without ``--source`` (or with ``--source sample``) segments it.
"""
from __future__ import annotations

from pathlib import Path

SAMPLE_NAME = "sample"
SAMPLE_CLIP = Path(__file__).resolve().parent / "highway_960x540_25fps.mp4"


def resolve_source(source: str | None) -> str:
    """``None`` or ``"sample"`` -> the shipped clip's path; anything else unchanged."""
    return str(SAMPLE_CLIP) if source in (None, SAMPLE_NAME) else source
