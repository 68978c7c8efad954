"""Live sources: newest frame only, drops counted, latency bounded; streams reconnect with backoff."""
import json
import threading
import time

import cv2
import numpy as np
import pytest

from rtseg.pipeline import PipelineError, RunOptions, Source, SourceError, run
from rtseg.pipeline.sources import LiveSource


class FakeCamera(Source):
    """A camera delivering ``n`` frames at ``fps`` whether or not anyone keeps up."""

    live = True
    description = "fake camera"

    def __init__(self, n: int, fps: float, live: bool = True):
        self.n, self.period, self.live = n, 1.0 / fps, live
        self.total = None
        self.i = 0
        self.t0 = None
        self.lag: list[float] = []  # seconds between a frame existing and being read
        self.image = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 1, 3))

    def read(self, stop):
        if self.i >= self.n:
            return None
        if self.t0 is None:
            self.t0 = time.perf_counter()
        # Frame i exists at t0 + i * period, not earlier: a sensor cannot be read ahead.
        wait = self.t0 + self.i * self.period - time.perf_counter()
        if wait > 0 and stop.wait(wait):
            return None
        self.lag.append(max(0.0, -wait))
        self.i += 1
        return self.frame(self.i - 1, f"{self.i - 1:06d}", self.image)


def test_live_source_keeps_the_newest_frame_and_counts_drops(fake_backend, tmp_path):
    camera = FakeCamera(n=300, fps=500)  # 2 ms per frame, against 20 ms of inference
    summary = run(RunOptions(source="camera", save_masks=str(tmp_path / "m"), quiet=True),
                  backend=fake_backend(delay=0.02), source=camera)
    assert summary["live"] and summary["dropped"] > 0
    # Every frame the camera produced was either processed or counted as dropped.
    assert summary["frames"] + summary["dropped"] == 300
    assert len(list((tmp_path / "m").iterdir())) == summary["frames"]
    # Bounded latency. The capture thread never waits for the pipeline, so frames are read as
    # they appear (keeping every frame would leave them in the sensor for up to 300 * 18 ms)...
    infer = summary["stages_ms"]["inference"]
    assert max(camera.lag) * 1000 < 5 * infer["p99"]
    # ...and from capture to output a frame waits behind at most the few one-slot queues.
    assert summary["latency_ms"]["max"] < 10 * infer["p99"]


def test_file_policy_on_the_same_camera_keeps_every_frame_and_falls_behind(fake_backend):
    camera = FakeCamera(n=40, fps=1000, live=False)
    summary = run(RunOptions(source="camera", quiet=True), backend=fake_backend(delay=0.005), source=camera)
    assert summary["frames"] == 40 and summary["dropped"] == 0
    # The contrast that makes the live policy necessary: blocked by back-pressure, the reader
    # falls further behind the sensor with every frame (40 frames * 4 ms of extra work).
    assert max(camera.lag) > 20 * camera.period


def tiny_clip(path, n=5):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (32, 24))
    for i in range(n):
        w.write(np.full((24, 32, 3), 40 * i, np.uint8))
    w.release()
    return path


def test_stream_reconnects_after_a_drop(tmp_path):
    # A file opened as a stream "drops" at its end; reopening it is a successful reconnect.
    source = LiveSource(str(tiny_clip(tmp_path / "s.mkv")), reconnect=1, max_frames=12)
    stop = threading.Event()
    frames = []
    while (frame := source.read(stop)) is not None:
        frames.append(frame)
    assert [f.index for f in frames] == list(range(12)) and source.reconnects == 2
    assert [int(f.image[0, 0, 0]) for f in frames[:7]] == [0, 40, 80, 120, 160, 0, 40]


def test_stream_gives_up_after_n_attempts_with_backoff(tmp_path):
    clip = tiny_clip(tmp_path / "s.mkv", n=2)
    source = LiveSource(str(clip), reconnect=2)
    stop = threading.Event()
    source.read(stop), source.read(stop)
    clip.unlink()  # the stream is gone for good
    t = time.perf_counter()
    with pytest.raises(SourceError, match=r"lost .*s\.mkv \(2 reconnect attempts failed\)"):
        source.read(stop)
    assert time.perf_counter() - t >= 0.5 + 1.0  # waited 0.5 s, then 1 s: exponential backoff


def test_stop_interrupts_a_reconnect_wait(tmp_path):
    clip = tiny_clip(tmp_path / "s.mkv", n=1)
    source = LiveSource(str(clip), reconnect=50)
    stop = threading.Event()
    source.read(stop)
    clip.unlink()
    threading.Timer(0.2, stop.set).start()
    assert source.read(stop) is None  # returned on stop, not after 50 backoffs


def test_lost_stream_stops_the_pipeline_with_one_line(fake_backend, tmp_path):
    from test_pipeline_errors import header_only

    # Opens, then delivers nothing: a stream that fails before its first frame is lost, not ended.
    source = LiveSource(str(header_only(tmp_path / "s.mp4")), reconnect=0)
    with pytest.raises(PipelineError, match=r"capture stage: lost .*use --reconnect N"):
        run(RunOptions(source="stream", output=str(tmp_path / "o.mp4"), quiet=True),
            backend=fake_backend(), source=source)
    assert not (tmp_path / "o.mp4").exists()


def test_a_stream_that_closes_after_its_frames_has_ended_not_been_lost(fake_backend, tmp_path):
    # A file read as a stream closes at its end at once, as a server that finished does.
    source = LiveSource(str(tiny_clip(tmp_path / "s.mkv", n=4)), reconnect=0)
    summary = run(RunOptions(source="stream", output=str(tmp_path / "o.mp4"), json=str(tmp_path / "s.json"),
                             quiet=True), backend=fake_backend(), source=source)
    assert summary["ending"] == "completed" and summary["frames"] + summary["dropped"] == 4
    assert json.loads((tmp_path / "s.json").read_text())["summary"]["ending"] == "completed"
    assert cv2.VideoCapture(str(tmp_path / "o.mp4")).read()[0]


def test_a_stream_lost_after_its_reconnects_keeps_its_outputs(fake_backend, tmp_path):
    from rtseg.pipeline.runner import SourceLost

    clip = tiny_clip(tmp_path / "s.mkv", n=4)
    source = LiveSource(str(clip), reconnect=1)
    clip.unlink()  # what is open still reads; the reconnect then finds nothing
    out, js = tmp_path / "o.mp4", tmp_path / "s.json"
    with pytest.raises(SourceLost, match=r"capture stage: lost .*\(1 reconnect attempts failed\)") as e:
        run(RunOptions(source="stream", output=str(out), json=str(js), quiet=True),
            backend=fake_backend(delay=0.01), source=source)
    summary = json.loads(js.read_text())["summary"]
    assert summary["ending"] == e.value.summary["ending"] == "source_lost" and summary["frames"] >= 1
    assert "lost" in summary["error"]
    frames = 0
    cap = cv2.VideoCapture(str(out))
    while cap.read()[0]:
        frames += 1
    assert frames >= 1


def test_live_recording_plays_for_as_long_as_it_was_captured(fake_backend, tmp_path):
    from stream_helpers import video_duration

    pytest.importorskip("imageio_ffmpeg", reason="variable frame rate output needs imageio-ffmpeg")
    camera = FakeCamera(n=75, fps=25)  # 3 s of a 25 fps camera...
    out = tmp_path / "o.mp4"
    summary = run(RunOptions(source="camera", output=str(out), quiet=True),
                  backend=fake_backend(delay=0.1), source=camera)  # ...of which ~10 fps get through
    assert summary["dropped"] > 0 and summary["frames"] < 60
    # Written at the nominal 25 fps the recording would last frames / 25 s (a time-lapse).
    assert abs(video_duration(out) - 3.0) <= 0.3


def test_without_ffmpeg_a_live_recording_keeps_time_by_repeating_frames(fake_backend, tmp_path, monkeypatch):
    import rtseg.pipeline.sinks as sinks

    monkeypatch.setattr(sinks, "ffmpeg_exe", lambda: None)
    camera = FakeCamera(n=50, fps=25)  # 2 s
    out = tmp_path / "o.avi"
    summary = run(RunOptions(source="camera", output=str(out), quiet=True),
                  backend=fake_backend(delay=0.1), source=camera)
    cap = cv2.VideoCapture(str(out))
    written = 0
    while cap.read()[0]:
        written += 1
    assert summary["frames"] < 30 and abs(written / 25 - 2.0) <= 0.2  # a fixed 25 fps file lasting 2 s
