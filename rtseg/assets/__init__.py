"""Files that ship inside the package, so the first command runs with no data of the user's.

``highway_960x540_25fps.mp4``: a real dashcam clip, 221 frames, 960x540, 25 fps, H.264, daylight
highway. From udacity/CarND-LaneLines-P1 (``test_videos/solidWhiteRight.mp4``), MIT licence.
``rtseg run`` without ``--source`` (or with ``--source sample``) segments it.

``calib/``: the frames the default INT8 model is calibrated on (``rtseg run`` without
``--precision``): 24 CamVid train frames, every 15th, all three drives (research and personal use,
CC BY-NC 4.0, like the weights trained on them) and 16 frames of the clip, JPEG quality 95.
Calibrated on the clip alone, the INT8 model lost 1.7 mIoU points on CamVid val (signs 34.9 ->
18.2): the clip's highway holds too few of the classes a city street does.
"""
from __future__ import annotations

from pathlib import Path

SAMPLE_NAME = "sample"
SAMPLE_CLIP = Path(__file__).resolve().parent / "highway_960x540_25fps.mp4"
CALIB_DIR = Path(__file__).resolve().parent / "calib"


def resolve_source(source: str | None) -> str:
    """``None`` or ``"sample"`` -> the shipped clip's path; anything else unchanged."""
    return str(SAMPLE_CLIP) if source in (None, SAMPLE_NAME) else source
