"""The figures `rtseg run` measures alone after its last frame, and the cheap stage kernels."""
import threading
import time

import cv2
import numpy as np
import pytest
import torch
from conftest import CLIP, FakeBackend

from rtseg.assets import CALIB_DIR
from rtseg.backends.base import normalize_image
from rtseg.pipeline import RunOptions, run
from rtseg.pipeline.costs import decode_cost, model_only
from rtseg.pipeline.sinks import VideoSink
from rtseg.pipeline import stages
from rtseg.pipeline.sources import Frame, VideoFileSource
from rtseg.pipeline.stats import STAGES
from rtseg.pipeline.upsample import channel_argmax


class Spy(FakeBackend):
    """Records, for each inference, whether any pipeline stage thread was alive at the time."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.during_pipeline = 0
        self.alone = 0

    def infer(self, batch):
        busy = any(t.name.startswith("rtseg-") and t.is_alive() for t in threading.enumerate())
        if busy:
            self.during_pipeline += 1
        else:
            self.alone += 1
        return super().infer(batch)


def test_model_only_is_measured_alone_after_the_run_on_the_same_backend(tmp_path):
    spy = Spy(delay=0.02, input_size=(45, 80))
    s = run(RunOptions(source=str(CLIP), max_frames=8, quiet=True, output=str(tmp_path / "o.mp4"),
                       save_masks=str(tmp_path / "m")), backend=spy)
    assert spy.during_pipeline == 8 == s["frames"]
    # Every model-only call ran with no stage thread alive; warm-up calls are not timed.
    assert spy.alone == s["model_only"]["runs"] + 3 + 1  # + warm-up + the stage-cost pass
    assert s["model_only"]["latency_ms"]["p50"] >= 20  # the backend sleeps 20 ms a call
    assert s["model_fps"] == s["model_only"]["fps"] and s["ratio"] == round(s["fps"] / s["model_fps"], 3)
    assert s["model_fps_in_pipeline"] > 0
    cpu = s["stage_cpu_ms"]
    assert set(cpu) == set(STAGES)
    assert all(cpu[k] >= 0 for k in STAGES)
    assert cpu["sink"] > 0  # the H.264 encoder's own process and the PNG masks both cost CPU


def test_costs_can_be_skipped(tmp_path):
    spy = Spy(input_size=(45, 80))
    s = run(RunOptions(source=str(CLIP), max_frames=4, quiet=True, costs=False), backend=spy)
    assert spy.alone == 0 and spy.during_pipeline == 4
    assert s["model_fps"] is None and s["ratio"] is None and s["stage_cpu_ms"] is None


def test_model_only_stops_at_its_run_count():
    spy = Spy(input_size=(45, 80))
    r = model_only(spy, np.zeros((3, 45, 80), np.float32), warmup=2, runs=7, budget_s=None)
    assert r["runs"] == 7 and spy.alone == 9 and r["fps"] > 0 and r["cpu_ms"] >= 0


def test_decode_cost_of_a_file_and_of_a_missing_one(tmp_path):
    assert decode_cost(str(CLIP), frames=3) > 0
    assert decode_cost(str(tmp_path / "nothing.mp4")) is None


def test_the_encoder_reports_its_own_cpu_time(tmp_path):
    sink = VideoSink(tmp_path / "v.mp4", 25.0)
    if sink.exe is None:
        pytest.skip("imageio-ffmpeg is not installed")
    rng = np.random.default_rng(0)
    for i in range(10):
        image = rng.integers(0, 255, (120, 160, 3), np.uint8)
        frame = Frame(i, f"{i}", image, 0.0, view=image)
        sink.write(frame)
    sink.close(commit=True)
    assert (tmp_path / "v.mp4").stat().st_size > 0
    assert sink.cpu_ms_per_frame(None, None) > 0


def test_channel_argmax_matches_torch_and_takes_the_first_maximum():
    scores = np.random.default_rng(1).standard_normal((11, 37, 53)).astype(np.float32)
    ids = channel_argmax(scores)
    assert ids.dtype == np.uint8
    assert (ids == torch.from_numpy(scores).argmax(0).numpy()).all()
    tie = np.zeros((3, 2, 2), np.float32)
    tie[1] = tie[2] = 1.0
    assert (channel_argmax(tie) == 1).all()


@pytest.mark.parametrize("size", [(360, 480), (540, 960), (100, 75)])
def test_normalizing_a_bgr_frame_equals_converting_then_normalizing_in_float(size):
    image = cv2.imread(str(sorted(CALIB_DIR.glob("*.jpg"))[0]))  # a real CamVid frame
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    # The reference: the whole frame to float, normalized, then resized per channel.
    resized = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    expected = ((resized.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)
    got_bgr = normalize_image(image, size, mean, std, bgr=True)
    got_rgb = normalize_image(rgb, size, mean, std)
    assert got_bgr.shape == (3, *size) and got_bgr.dtype == np.float32 and got_bgr.flags.c_contiguous
    assert np.abs(got_bgr - expected).max() < 1e-5 and np.array_equal(got_bgr, got_rgb)


class Overlapping(FakeBackend):
    """Runs ``inflight`` frames at once on a worker pool, finishing them out of order (the later of
    two submissions finishes first), and records the most submissions ever pending."""

    inflight = 2

    def __init__(self, **kw):
        super().__init__(**kw)
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(2)
        self.pending = self.most_pending = self.n = 0
        self.lock = threading.Lock()

    def submit(self, batch):
        with self.lock:
            self.pending += 1
            self.most_pending = max(self.most_pending, self.pending)
            self.n += 1
            delay = 0.03 if self.n % 2 else 0.005  # odd submissions are slow: order must come from the caller
        batch = batch.copy()

        def work():
            time.sleep(delay)
            return FakeBackend.infer(self, batch)
        future = self.pool.submit(work)

        def result():
            out = future.result()
            with self.lock:
                self.pending -= 1
            return out
        return result


def test_a_backend_with_two_requests_in_flight_keeps_the_frames_in_order(tmp_path):
    backend = Overlapping(input_size=(45, 80))
    s = run(RunOptions(source=str(CLIP), max_frames=12, quiet=True, save_masks=str(tmp_path / "m"),
                       json=str(tmp_path / "s.json")), backend=backend)
    assert s["frames"] == 12 and backend.most_pending == 2
    reference = FakeBackend(input_size=(45, 80))
    source = VideoFileSource(str(CLIP), 1, 12)
    with torch.inference_mode():
        while (frame := source.read(None)) is not None:
            logits = stages.infer(reference, stages.preprocess(reference, frame.image, None))
            expected = stages.to_mask(reference, logits, frame.image.shape[:2])
            saved = cv2.imread(str(tmp_path / "m" / f"{frame.name}.png"), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(saved, expected), frame.name
    source.close()
    # The model alone is measured the same way: two at a time.
    assert s["model_only"]["inflight"] == 2 and backend.most_pending == 2


def test_masks_alone_skip_drawing_the_overlay(tmp_path):
    backend = FakeBackend(input_size=(45, 80))
    s = run(RunOptions(source=str(CLIP), max_frames=3, quiet=True, save_masks=str(tmp_path / "m")), backend=backend)
    assert s["stages_ms"]["overlay"]["max"] == 0 and s["stage_cpu_ms"]["overlay"] is None
    s = run(RunOptions(source=str(CLIP), max_frames=3, quiet=True, save_masks=str(tmp_path / "m2"),
                       save_overlay=str(tmp_path / "o")), backend=backend)
    assert s["stages_ms"]["overlay"]["max"] > 0 and s["stage_cpu_ms"]["overlay"] > 0
    assert len(list((tmp_path / "o").iterdir())) == 3
