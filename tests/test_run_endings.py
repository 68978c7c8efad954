"""Every ending of ``rtseg run`` keeps the recording: real streams served by ffmpeg on 127.0.0.1,
real signals sent to a real ``rtseg run`` process, real files."""
import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import CLIP
from stream_helpers import (StreamServer, count_files, decoded_frames, start_run, video_duration,
                            wait_for)

# A small shipped model in torch: no export, a few hundred ms a frame on two shared cores.
MODEL = ["--model", "enet_camvid", "--backend", "torch", "--size", "180x240", "--threads", "1"]


def outputs(tmp_path):
    out, js, masks = tmp_path / "rec.mp4", tmp_path / "rec.json", tmp_path / "masks"
    return out, js, masks, ["--output", str(out), "--json", str(js), "--save-masks", str(masks)]


def check_recording(out: Path, js: Path, masks: Path, ending: str) -> dict:
    """The video plays, the masks and the JSON describe the same frames, nothing unfinished is left."""
    summary = json.loads(js.read_text())["summary"]
    assert summary["ending"] == ending, summary
    assert decoded_frames(out) == summary["frames"] == count_files(masks) > 0
    assert not [n for n in os.listdir(out.parent) if n.startswith(".")]
    return summary


def one_line(stderr: str, needle: str) -> None:
    assert "Traceback" not in stderr
    assert len([ln for ln in stderr.splitlines() if needle in ln]) == 1, stderr


@pytest.mark.slow
def test_stream_that_ends_is_completed_and_plays_at_real_speed(tmp_path):
    out, js, masks, outs = outputs(tmp_path)
    server = StreamServer(CLIP, seconds=6)
    try:
        proc = start_run("--source", server.url, *MODEL, *outs)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        server.close()
    assert proc.returncode == 0, stderr
    summary = check_recording(out, js, masks, "completed")
    assert summary["live"] and "lost" not in stderr
    # The recording lasts as long as the capture did (frames are stamped as they arrive), not
    # frames / 25 fps: with the model slower than the stream, that would be a time-lapse.
    records = json.loads(js.read_text())["frames"]
    span = records[-1]["t"] - records[0]["t"]
    assert len(records) >= 3 and abs(video_duration(out) - span) <= 0.1 * span + 1 / 25


@pytest.mark.slow
def test_stream_killed_for_good_leaves_a_playable_recording_that_says_source_lost(tmp_path):
    out, js, masks, outs = outputs(tmp_path)
    server = StreamServer(CLIP, seconds=120, loop=True)
    try:
        proc = start_run("--source", server.url, "--reconnect", "3", *MODEL, *outs)
        wait_for(lambda: count_files(masks) >= 3, proc, what="3 frames")
        server.kill()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        server.close()
    assert proc.returncode == 3, stderr
    summary = check_recording(out, js, masks, "source_lost")
    assert "3 reconnect attempts failed" in summary["error"]
    one_line(stderr, "error: capture stage: lost")
    assert "(source lost)" in stdout


@pytest.mark.slow
def test_stream_restarted_within_the_backoff_is_reconnected(tmp_path):
    out, js, masks, outs = outputs(tmp_path)
    first = StreamServer(CLIP, seconds=120, loop=True)
    second = None
    try:
        proc = start_run("--source", first.url, "--reconnect", "3", *MODEL, *outs)
        wait_for(lambda: count_files(masks) >= 3, proc, what="3 frames")
        first.kill()
        before = count_files(masks)
        second = StreamServer(CLIP, seconds=4, port=first.port)
        wait_for(lambda: count_files(masks) >= before + 3, proc, what="frames after the reconnect")
        second.wait()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        first.close()
        if second is not None:
            second.close()
    # The second server's end cannot be told from a drop, so with --reconnect it ends as lost.
    summary = check_recording(out, js, masks, "source_lost")
    assert proc.returncode == 3 and summary["reconnects"] == 1 and summary["frames"] >= before + 3


def wait_for_handlers(proc, timeout: float = 60) -> None:
    """Until the process catches SIGTERM (SigCgt in /proc): the CLI has started."""
    def caught():
        status = Path(f"/proc/{proc.pid}/status").read_text()
        mask = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), 16)
        return mask & (1 << (signal.SIGTERM - 1))
    wait_for(caught, proc, timeout, "the signal handlers")


CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


@pytest.mark.parametrize("delay", [0.0, 1.0, 3.0])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_signal_during_start_up_and_model_loading_ends_the_run(sig, delay, tmp_path):
    out, js, masks, outs = outputs(tmp_path)
    proc = start_run("--source", str(CLIP), *MODEL, *outs)
    wait_for_handlers(proc)
    time.sleep(delay)
    sent = time.monotonic()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    # Never ignored: the run ends with the signal's code instead of going on to the end of the clip.
    assert proc.returncode == CODES[sig], stderr
    assert "Traceback" not in stderr and time.monotonic() - sent < 60
    if js.exists():  # the signal landed after the first frame: the outputs are finalized
        check_recording(out, js, masks, "interrupted")
    else:
        assert stderr.strip().splitlines()[-1] == (f"rtseg run: stopped by {sig.name} before the first frame; "
                                                   f"no output was written")
        assert not out.exists() and count_files(masks) == 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_mid_run_finalizes_every_output(sig, tmp_path):
    out, js, masks, outs = outputs(tmp_path)
    proc = start_run("--source", str(CLIP), *MODEL, *outs)
    wait_for(lambda: count_files(masks) >= 3, proc, what="3 frames")
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == CODES[sig], stderr
    summary = check_recording(out, js, masks, "interrupted")
    assert summary["signal"] == sig.name and summary["frames"] < 221
    one_line(stderr, f"{sig.name}: finishing the frames in flight")


@pytest.mark.slow
def test_second_signal_stops_at_once_and_still_finalizes(tmp_path):
    out, js, masks, outs = outputs(tmp_path)
    proc = start_run("--source", str(CLIP), *MODEL, *outs)
    wait_for(lambda: count_files(masks) >= 3, proc, what="3 frames")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    check_recording(out, js, masks, "interrupted")
    one_line(stderr, "SIGTERM again: stopping at once")


def test_a_live_recording_keeps_frames_that_reach_the_encoder_in_a_burst(tmp_path):
    """On a busy CPU the encoder reads several queued frames at once, stamped microseconds apart;
    every one of them must reach the file (a variable-frame-rate mode that merges near-equal
    stamps kept 12 of 30 here)."""
    from types import SimpleNamespace

    import numpy as np

    from rtseg.pipeline.sinks import VideoSink

    sink = VideoSink(tmp_path / "live.mp4", fps=25.0, timestamps=True)
    assert sink.exe, "imageio-ffmpeg (a dev dependency) provides the H.264 writer"
    for i in range(30):
        sink.write(SimpleNamespace(view=np.full((48, 64, 3), i * 8, np.uint8)))
        if i % 3 == 0:
            time.sleep(0.04)  # three frames back to back, then a pause
    sink.close(commit=True)
    assert decoded_frames(tmp_path / "live.mp4") == 30
