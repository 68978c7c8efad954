"""The clip that ships inside the package: `rtseg run` with no --source runs on it, in any folder."""
import json
import os

import cv2

from rtseg.assets import SAMPLE_CLIP, resolve_source
from rtseg.cli import main


def test_the_sample_clip_ships_and_decodes():
    cap = cv2.VideoCapture(str(SAMPLE_CLIP))
    ok, frame = cap.read()
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert ok and frame.shape == (540, 960, 3) and count == 221


def test_sample_names_the_shipped_clip():
    assert resolve_source(None) == resolve_source("sample") == str(SAMPLE_CLIP)
    assert resolve_source("clip.mp4") == "clip.mp4"


def test_run_without_a_source_segments_the_sample(tiny_enet, tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.chdir(tmp_path)  # from a folder with no data in it, as after a fresh install
    os.mkdir("masks")
    assert main(["run", "--model", str(tiny_enet), "--size", "180x240", "--precision", "fp32", "--threads", "1",
                 "--max-frames", "3",
                 "--save-masks", "masks", "--json", "s.json", "--quiet"]) == 0
    assert sorted(os.listdir("masks")) == ["000000.png", "000001.png", "000002.png"]
    assert cv2.imread("masks/000000.png", cv2.IMREAD_UNCHANGED).shape == (540, 960)
    summary = json.loads(open("s.json").read())["summary"]
    assert summary["frames"] == 3
