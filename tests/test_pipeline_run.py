"""`rtseg run` end to end on the real highway clip: every frame in, every frame out, masks, JSON."""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from conftest import CLIP

from rtseg.backends import open_backend
from rtseg.cli import main
from rtseg.evaluate import predict_probs
from rtseg.pipeline import RunOptions, run
from rtseg.pipeline.bench import format_benchmark, pipeline_benchmark
from rtseg.pipeline.stats import STAGES


def decode(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            return frames
        frames.append(f)


def clip_frame(index):
    """Frame ``index`` of the clip as RGB, decoded sequentially (seeking may land elsewhere)."""
    cap = cv2.VideoCapture(str(CLIP))
    for _ in range(index + 1):
        ok, f = cap.read()
        assert ok
    return cv2.cvtColor(f, cv2.COLOR_BGR2RGB)


@pytest.mark.slow
def test_highway_clip_every_frame_video_masks_json(tiny_enet, tmp_path, one_torch_thread):
    out, masks, stats = tmp_path / "out" / "overlay.mp4", tmp_path / "masks", tmp_path / "stats.json"
    assert main(["run", "--source", str(CLIP), "--model", str(tiny_enet), "--size", "180x240",
                 "--precision", "fp32", "--threads", "1", "--output", str(out), "--save-masks", str(masks),
                 "--json", str(stats), "--quiet"]) == 0

    video = decode(out)
    assert len(video) == 221 and all(f.shape == (540, 960, 3) for f in video)
    assert sorted(os.listdir(out.parent)) == ["overlay.mp4"]  # no temporary left behind

    names = sorted(os.listdir(masks))
    assert names == [f"{i:06d}.png" for i in range(221)]
    first = cv2.imread(str(masks / names[0]), cv2.IMREAD_UNCHANGED)
    assert first.shape == (540, 960) and first.dtype == np.uint8 and first.max() < 11

    # The saved masks are what `rtseg eval` would predict for those very frames (first and last:
    # an off-by-one or a colour swap would show here).
    backend = open_backend(str(tiny_enet))
    for i in (0, 220):
        expected = predict_probs(backend, clip_frame(i), (180, 240)).argmax(0).numpy()
        saved = cv2.imread(str(masks / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert (saved == expected).mean() > 0.995, i

    data = json.loads(stats.read_text())
    s = data["summary"]
    assert s["frames"] == 221 and s["dropped"] == 0 and not s["interrupted"] and not s["live"]
    assert s["fps"] > 0 and s["model_fps"] > 0 and s["size"] == [180, 240] and s["model"] == "enet_camvid"
    lat = s["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert [r["index"] for r in data["frames"]] == list(range(221))
    for r in data["frames"]:
        assert all(r[k] >= 0 for k in STAGES) and r["inference"] > 0
        assert r["latency"] >= r["inference"]  # capture-to-output spans the model call


def test_stride_and_max_frames_keep_source_indices(fake_backend, tmp_path):
    summary = run(RunOptions(source=str(CLIP), vid_stride=50, max_frames=3, save_masks=str(tmp_path / "m"),
                             output=str(tmp_path / "o.mp4"), quiet=True), backend=fake_backend())
    assert summary["frames"] == 3
    assert sorted(os.listdir(tmp_path / "m")) == ["000000.png", "000050.png", "000100.png"]
    assert len(decode(tmp_path / "o.mp4")) == 3
    # Frame 100 of the clip, not the third frame read: compare with a direct decode.
    mask = cv2.imread(str(tmp_path / "m" / "000100.png"), cv2.IMREAD_UNCHANGED)
    b = fake_backend()
    expected = predict_probs(b, clip_frame(100)).argmax(0).numpy()
    assert (mask == expected).mean() > 0.999


def test_image_folder_names_masks_by_stem(fake_backend, tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    rng = np.random.default_rng(0)
    for stem, (h, w) in (("b_frame", (40, 60)), ("a_frame", (30, 50))):
        cv2.imwrite(str(src / f"{stem}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    (src / "notes.txt").write_text("not an image")
    summary = run(RunOptions(source=str(src), save_masks=str(tmp_path / "m"), save_overlay=str(tmp_path / "v"),
                             output=str(tmp_path / "o.mp4"), mode="side", quiet=True), backend=fake_backend())
    assert summary["frames"] == 2
    assert sorted(os.listdir(tmp_path / "m")) == ["a_frame.png", "b_frame.png"]
    assert cv2.imread(str(tmp_path / "m" / "a_frame.png"), cv2.IMREAD_UNCHANGED).shape == (30, 50)
    assert cv2.imread(str(tmp_path / "v" / "b_frame.jpg")).shape == (40, 120, 3)  # side by side
    video = decode(tmp_path / "o.mp4")  # mixed sizes: every frame scaled to the first one's
    assert len(video) == 2 and all(f.shape == (30, 100, 3) for f in video)


def test_backend_runs_only_on_the_inference_thread(fake_backend, tmp_path):
    b = fake_backend()
    # costs=False: the measurement alone after the run calls the model from the calling thread.
    run(RunOptions(source=str(CLIP), max_frames=5, quiet=True, costs=False), backend=b)
    assert b.threads == {"rtseg-inference"} and b.calls == 5


def test_argmax_in_graph_artifacts_resize_ids_like_eval(fake_backend, tmp_path):
    b = fake_backend(ids=True)
    run(RunOptions(source=str(CLIP), max_frames=1, save_masks=str(tmp_path / "m"), quiet=True), backend=b)
    mask = cv2.imread(str(tmp_path / "m" / "000000.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(mask, predict_probs(b, clip_frame(0)).argmax(0).numpy())


@pytest.mark.slow
def test_ctrl_c_finalizes_a_playable_video(tiny_enet, tmp_path):
    out, masks = tmp_path / "out.mp4", tmp_path / "masks"
    proc = subprocess.Popen([sys.executable, "-m", "rtseg", "run", "--source", str(CLIP), "--model", str(tiny_enet),
                             "--size", "180x240", "--precision", "fp32", "--threads", "1", "--output", str(out),
                             "--save-masks", str(masks)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # A shell that starts the test suite in the background leaves SIGINT
                            # ignored, and Python keeps an inherited "ignore"; a terminal user's
                            # Ctrl+C reaches a process whose SIGINT is in its default state.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (masks.is_dir() and len(os.listdir(masks)) >= 5):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "(interrupted)" in stdout and "Traceback" not in stderr
    written = len([n for n in os.listdir(masks) if n.endswith(".png")])
    video = decode(out)
    # Frames in flight were finished, not lost: the video and the masks hold the same frames.
    assert 5 <= len(video) == written < 221
    assert sorted(os.listdir(tmp_path)) == ["masks", "out.mp4"]


def test_pipeline_benchmark_reports_every_mode(fake_backend, tmp_path):
    r = pipeline_benchmark(source=str(CLIP), frames=6, warmup=1, json_path=str(tmp_path / "b.json"),
                           quiet=True, backend=fake_backend(input_size=(90, 160)))
    assert r["frames"] == 6 and r["naive"]["frames"] == 6 and r["frame_size"] == [540, 960]
    for mode in ("model_only", "naive", "pipeline", "masks_only", "live"):
        assert r[mode]["fps"] > 0 and r[mode]["latency_ms"]["p50"] > 0
    assert r["live"]["frames"] + r["live"]["dropped"] == 6
    assert r["speedup_over_naive"] > 0 and r["ratio_end_to_end_model_only"] > 0
    assert r["ratio_masks_only_model_only"] == round(r["masks_only"]["fps"] / r["model_only"]["fps"], 3)
    assert set(r["stage_cpu_ms"]) == set(STAGES) and r["stage_cpu_ms"]["sink"] > 0
    assert 0 <= r["postprocess_ms"]["pixels_differing"] < 0.5
    assert json.loads((tmp_path / "b.json").read_text())["frames"] == 6
    table = format_benchmark(r)
    assert "naive loop" in table and "speed-up over naive" in table
    assert set(r["cpu_steal"]) == {"model_only", "naive", "pipeline", "masks", "live"}
    if r["cpu_steal"]["pipeline"] is not None:  # Linux
        assert 0 <= r["cpu_steal"]["pipeline"] <= 1 and "stolen by the hypervisor" in table


def test_steal_share_from_proc_stat(tmp_path):
    from rtseg.cpustat import StealMeter, parse_cpu_line

    line = "cpu  {} 0 100 {} 0 0 0 {} 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 5\n"
    assert parse_cpu_line(line.format(600, 200, 100)) == (100, 1000)
    assert parse_cpu_line("cpu  1 2 3 4\n") is None  # kernels before 2.6.11 had no steal field
    stat = tmp_path / "stat"
    stat.write_text(line.format(600, 200, 100))
    meter = StealMeter(stat)
    stat.write_text(line.format(1400, 400, 500))  # +800 user, +200 idle, +400 steal of +1400
    assert meter.lap() == pytest.approx(400 / 1400, abs=1e-4)
    assert meter.lap() is None  # no time has passed in the second lap
    stat.write_text(line.format(1500, 500, 500))
    assert meter.lap() == 0.0  # the second lap starts where the first ended
    assert StealMeter(tmp_path / "absent").lap() is None


def test_benchmark_report_flags_a_disturbed_run():
    base = {"model": "m", "runtime": "torch", "precision": "fp32", "size": [90, 160], "source": "c.mp4",
            "frames": 6, "frame_size": [540, 960], "threads": 2, "postprocess_ms": {},
            "ratio_end_to_end_model_only": 0.9, "ratio_masks_only_model_only": 0.95, "speedup_over_naive": 1.0}
    lat = {"fps": 5.0, "latency_ms": {"p50": 1.0, "p99": 2.0}}
    base.update(model_only=lat, naive=lat, pipeline=lat, masks_only=lat,
                live={**lat, "source_fps": 25, "dropped": 1, "frames": 5})
    quiet = format_benchmark({**base, "cpu_steal": {"model_only": 0.001, "naive": 0.002, "pipeline": 0.003,
                                                    "live": 0.0}})
    assert "pipeline 0.3%" in quiet and "re-run on a quieter host" not in quiet
    noisy = format_benchmark({**base, "cpu_steal": {"model_only": 0.001, "naive": 0.002, "pipeline": 0.06,
                                                    "live": None}})
    assert "pipeline 6.0%" in noisy and "re-run on a quieter host" in noisy and "live" not in noisy.splitlines()[-1]
    assert "stolen" not in format_benchmark({**base, "cpu_steal": {"model_only": None}})


@pytest.mark.slow
def test_a_file_keeps_its_own_timing_frame_for_frame(fake_backend, tmp_path):
    from stream_helpers import video_duration

    pytest.importorskip("imageio_ffmpeg", reason="H.264 output needs the `video` extra (imageio-ffmpeg)")
    out = tmp_path / "out.mp4"
    run(RunOptions(source=str(CLIP), output=str(out), quiet=True), backend=fake_backend())
    assert len(decode(out)) == 221 and video_duration(out) == pytest.approx(video_duration(CLIP), abs=0.01)


def test_h264_through_imageio_ffmpeg(fake_backend, tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="H.264 output needs the `video` extra (imageio-ffmpeg)")
    out = tmp_path / "out.mp4"
    summary = run(RunOptions(source=str(CLIP), max_frames=10, output=str(out), quiet=True), backend=fake_backend())
    assert summary["codec"] == "h264 (ffmpeg)"
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little") in (b"avc1", b"h264")
    video = decode(out)
    assert len(video) == 10 and video[0].shape == (540, 960, 3)


def test_without_ffmpeg_another_codec_with_a_one_line_notice(fake_backend, tmp_path, capsys, monkeypatch):
    import rtseg.pipeline.sinks as sinks

    monkeypatch.setattr(sinks, "ffmpeg_exe", lambda: None)
    sinks._fallback_notice.cache_clear()  # said once per process; earlier tests may have said it
    summary = run(RunOptions(source=str(CLIP), max_frames=3, output=str(tmp_path / "o.mp4"), quiet=True),
                  backend=fake_backend())
    err = capsys.readouterr().err
    assert summary["codec"] in ("avc1", "mp4v")
    assert ("browsers may not play" in err) == (summary["codec"] == "mp4v") and err.count("\n") <= 1
    assert len(decode(tmp_path / "o.mp4")) == 3
