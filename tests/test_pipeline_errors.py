"""Bad input gives one line and exit code 2, never a traceback, a hang or a finished-looking file."""
import json
import os
import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import CLIP
from test_pipeline_run import decode

from rtseg.cli import main
from rtseg.errors import RtsegError
from rtseg.pipeline import PipelineError, RunOptions, run


def rtseg_run(capsys, *args):
    """Runs ``rtseg run`` in-process; returns (exit code, stderr)."""
    code = main(["run", "--quiet", *args])
    err = capsys.readouterr().err.strip()
    return code, err


def header_only(path):
    """The highway clip cut after its ``moov`` box: opens, claims 221 frames, decodes none."""
    data = CLIP.read_bytes()
    pos = 0
    while data[pos + 4:pos + 8] != b"mdat":
        pos += struct.unpack(">I", data[pos:pos + 4])[0]
    path.write_bytes(data[:pos + 16])
    return path


def bad_source(case, tmp_path):
    if case == "missing":
        return tmp_path / "nope.mp4"
    if case == "not_a_video":
        (tmp_path / "x.mp4").write_bytes(b"not a video" * 100)
        return tmp_path / "x.mp4"
    if case == "zero_frames":
        return header_only(tmp_path / "empty.mp4")
    if case == "empty_folder":
        (tmp_path / "dir").mkdir()
        return tmp_path / "dir"
    return "9"  # a camera index no test machine has


@pytest.mark.parametrize("case, message", [
    ("missing", "source not found"),
    ("not_a_video", "cannot open video"),
    ("zero_frames", "no decodable frame"),
    ("empty_folder", "no images"),
    ("camera", "error: camera 9 is not available"),
])
def test_bad_sources(case, message, tmp_path, capsys):
    code, err = rtseg_run(capsys, "--source", str(bad_source(case, tmp_path)), "--model", "nosuchmodel",
                          "--output", str(tmp_path / "o" / "out.mp4"))
    # The source is checked before the model: its error comes first.
    assert code == 2 and err.startswith("rtseg run: error:") and message in err and "\n" not in err
    assert not (tmp_path / "o" / "out.mp4").exists()


def test_unreachable_stream_names_it_without_its_password(tmp_path, capsys):
    # Port 9 on localhost is closed on any test machine: the connection is refused at once.
    url = "rtsp://user:secret@127.0.0.1:9/cam"
    code, err = rtseg_run(capsys, "--source", url, "--model", "nosuchmodel")
    assert code == 2 and "\n" not in err
    assert "error: stream rtsp://user:***@127.0.0.1:9/cam is not available" in err and "secret" not in err


def test_unknown_model_and_class(fake_backend, capsys):
    code, err = rtseg_run(capsys, "--source", str(CLIP), "--model", "nosuchmodel")
    assert code == 2 and "unknown model 'nosuchmodel'" in err and "\n" not in err
    with pytest.raises(RtsegError, match="unknown class 'Lava'. Valid: class0, class1"):
        run(RunOptions(source=str(CLIP), ignore_class="class1,Lava", quiet=True), backend=fake_backend())


@pytest.mark.parametrize("flag", ["--output", "--save-masks", "--save-overlay", "--json"])
def test_unwritable_outputs_fail_before_the_model_loads(flag, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    target = blocker / ("out.mp4" if flag == "--output" else "x.json" if flag == "--json" else "dir")
    code, err = rtseg_run(capsys, "--source", str(CLIP), "--model", "nosuchmodel", flag, str(target))
    # The output error comes first, so a typo in a path costs no model loading.
    assert code == 2 and "cannot" in err and str(blocker) in err and "nosuchmodel" not in err


def test_unsupported_output_container(tmp_path, capsys):
    code, err = rtseg_run(capsys, "--source", str(CLIP), "--output", str(tmp_path / "out.webm"))
    assert code == 2 and "--output must end in .mp4" in err


def test_show_without_a_display_is_an_error_not_a_window(tmp_path, capsys, monkeypatch):
    if sys.platform != "linux":
        pytest.skip("DISPLAY only decides whether a window can open on Linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code, err = rtseg_run(capsys, "--source", str(CLIP), "--show")
    assert code == 2 and "--show needs" in err


def test_a_failing_stage_stops_everything_and_keeps_what_was_finished(fake_backend, tmp_path):
    out, js = tmp_path / "out.mp4", tmp_path / "s.json"
    backend = fake_backend(fail_at=4)
    with pytest.raises(PipelineError, match=r"^inference stage: RuntimeError: boom$") as e:
        run(RunOptions(source=str(CLIP), output=str(out), json=str(js), quiet=True), backend=backend)
    assert backend.calls == 4  # the capture thread stopped instead of reading the whole clip
    # No unfinished temporary is left; the JSON says how the run ended, and so does the error.
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]
    summary = json.loads(js.read_text())["summary"]
    assert summary["ending"] == e.value.summary["ending"] == "error"
    assert summary["error"] == "inference stage: RuntimeError: boom"
    if out.exists():  # frames that reached the sink before the abort are a playable video
        assert len(decode(out)) == summary["frames"] > 0


def corrupt_folder(tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    for name in ("a", "c"):
        cv2.imwrite(str(src / f"{name}.png"), np.full((20, 30, 3), 90, np.uint8))
    (src / "b.png").write_bytes(b"\x89PNG garbage")
    return src


def test_corrupt_image_in_a_folder_is_skipped_counted_and_reported(fake_backend, tmp_path, capsys):
    src = corrupt_folder(tmp_path)
    summary = run(RunOptions(source=str(src), output=str(tmp_path / "o.mp4"), save_masks=str(tmp_path / "m"),
                             json=str(tmp_path / "s.json"), quiet=True), backend=fake_backend())
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "skipped cannot decode image" in err and "b.png" in err
    assert summary["frames"] == 2 and summary["skipped_frames"] == 1 and summary["ending"] == "completed"
    assert sorted(os.listdir(tmp_path / "m")) == ["a.png", "c.png"]
    assert len(decode(tmp_path / "o.mp4")) == 2
    assert json.loads((tmp_path / "s.json").read_text())["summary"]["skipped_frames"] == 1


def test_strict_makes_the_first_corrupt_image_fatal(fake_backend, tmp_path):
    src = corrupt_folder(tmp_path)
    with pytest.raises(PipelineError, match="capture stage: cannot decode image.*b.png"):
        run(RunOptions(source=str(src), output=str(tmp_path / "o.mp4"), strict=True, quiet=True),
            backend=fake_backend())
    assert not (tmp_path / ".o.incomplete.mp4").exists()


def test_truncated_video_warns_once_and_records_it(fake_backend, tmp_path, capsys):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(CLIP.read_bytes()[:300_000])  # the moov box is at the front: 221 frames declared
    summary = run(RunOptions(source=str(cut), json=str(tmp_path / "s.json"), quiet=True), backend=fake_backend())
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("rtseg:")]
    assert 0 < summary["frames"] < 221 and summary["ending"] == "completed"
    assert summary["truncated"] == {"declared": 221, "read": summary["frames"]}
    assert len(err) == 1 and f"ended after {summary['frames']} of the 221 frames" in err[0]
    assert json.loads((tmp_path / "s.json").read_text())["summary"]["truncated"]["declared"] == 221


@pytest.mark.slow
def test_damaged_frames_mid_video_are_skipped_and_the_rest_is_read(tmp_path):
    data = bytearray(CLIP.read_bytes())
    third = len(data) // 3
    data[third:third + 50_000] = b"\xff" * 50_000  # a run of packets no decoder can read
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    masks = tmp_path / "m"
    args = [sys.executable, "-m", "rtseg", "run", "--source", str(bad), "--model", "enet_camvid",
            "--backend", "torch", "--size", "96x128", "--quiet"]
    out = subprocess.run([*args, "--save-masks", str(masks), "--json", str(tmp_path / "s.json")],
                         capture_output=True, text=True, timeout=600)
    summary = json.loads((tmp_path / "s.json").read_text())["summary"]
    # Every frame after the damage is still read: 221 in all, written or skipped.
    assert out.returncode == 0 and summary["skipped_frames"] > 0 and summary["truncated"] is None
    assert summary["frames"] == len(os.listdir(masks)) == 221 - summary["skipped_frames"]
    # One line per damaged run, and none of FFmpeg's own per-packet noise.
    assert out.stderr.count("undecodable frame(s)") == out.stderr.count("\n") >= 1, out.stderr
    strict = subprocess.run([*args, "--strict"], capture_output=True, text=True, timeout=600)
    assert strict.returncode == 1 and "undecodable frame(s)" in strict.stderr and "Traceback" not in strict.stderr


def test_a_complete_video_is_not_called_truncated(fake_backend, tmp_path):
    summary = run(RunOptions(source=str(CLIP), vid_stride=20, quiet=True), backend=fake_backend())
    assert summary["frames"] == 12 and summary["truncated"] is None and summary["skipped_frames"] == 0


def test_error_is_one_line_from_the_console_script(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rtseg", "run", "--source", str(header_only(tmp_path / "e.mp4"))],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "no decodable frame" in out.stderr
