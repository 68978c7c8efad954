"""``rtseg batch --ray`` on a real local Ray instance (2 CPUs, one per module): the same masks as a
local run over two short videos and an image folder, a worker killed mid-chunk, a run stopped
part-way and resumed, a corrupt video among good ones, and a bad cluster address."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from conftest import CAMVID, CLIP, REPO

import rtseg.cli
from rtseg.backends import open_backend
from rtseg.batch import BatchOptions, run_batch

if not os.environ.get("CI"):
    pytest.importorskip("ray", reason="needs Ray: pip install -e '.[ray]' (runs in CI)")
import ray  # noqa: E402

OPTS = ["--model", "deeplabv3plus_camvid", "--size", "64x96", "--threads", "1", "--chunk-frames", "3",
        "--batch-size", "2"]


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # The killing backend below lives in this module, which the workers cannot import.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two short real clips (7 and 5 frames of the highway clip at 192x108) and 3 CamVid frames."""
    root = tmp_path_factory.mktemp("inputs")
    for name, start, frames in (("a", 0, 7), ("b", 4, 5)):
        subprocess.run([ffmpeg(), "-loglevel", "error", "-y", "-ss", str(start), "-i", str(CLIP), "-frames:v",
                        str(frames), "-vf", "scale=192:108", "-c:v", "libx264", "-g", "3", "-pix_fmt", "yuv420p",
                        str(root / f"{name}.mp4")], check=True)
    (root / "imgs").mkdir()
    for f in sorted((CAMVID / "val").glob("*.png"))[:3]:
        shutil.copy(f, root / "imgs" / f.name)
    return root


def sources(root):
    return [str(root / "a.mp4"), str(root / "b.mp4"), str(root / "imgs")]


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """The local (no Ray) run every Ray run must reproduce."""
    out = tmp_path_factory.mktemp("local") / "out"
    args = [v for s in sources(inputs) for v in ("--source", s)]
    assert rtseg.cli.main(["batch", *args, "--out", str(out), "--quiet", *OPTS]) == 0
    return out


def outputs(out):
    return sorted(str(p.relative_to(out)) for sub in ("masks", "overlays") for p in (out / sub).rglob("*.*"))


def assert_same(out, reference):
    names = outputs(reference)
    assert len(names) == 30 and outputs(out) == names  # 15 masks, 15 overlays, one subfolder per input
    for name in names:
        a, b = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED), cv2.imread(str(reference / name), cv2.IMREAD_UNCHANGED)
        assert a.shape == b.shape and np.array_equal(a, b), name


def test_two_workers_write_the_masks_of_local_batch(ray_local, inputs, reference, tmp_path, capsys):
    out = tmp_path / "out"
    args = [v for s in sources(inputs) for v in ("--source", s)]
    assert rtseg.cli.main(["batch", *args, "--out", str(out), "--ray", "--workers", "2", *OPTS]) == 0
    captured = capsys.readouterr()
    assert "15/15" in captured.err and "15 processed, 0 skipped of 15" in captured.out
    assert_same(out, reference)
    summary = json.loads((out / "summary.json").read_text())
    local = json.loads((reference / "summary.json").read_text())
    assert summary["settings"] == local["settings"] and summary["inputs"] == local["inputs"]
    assert [i["label"] for i in summary["inputs"]] == ["a", "b", "imgs"]
    # 7 + 5 video frames in ranges of 3, 3 images: 6 chunks over 2 workers
    assert summary["chunks"] == 6 and summary["ray"]["workers"] == 2
    assert (summary["frames_failed"], summary["frames_retried"], summary["failed_inputs"]) == (0, 0, [])
    assert not (out / ".rtseg-batch").exists()


class DyingBackend:
    """The real model, whose worker process dies (os._exit, as if killed) in the middle of its
    second model call, once in the whole run (a marker file, seen by every worker)."""

    def __init__(self, marker):
        self.inner = open_backend("deeplabv3plus_camvid")
        self.meta, self.runtime, self.marker, self.calls = self.inner.meta, self.inner.runtime, marker, 0

    def infer(self, batch):
        self.calls += 1
        if self.calls == 2 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return self.inner.infer(batch)

    def preprocess(self, image, size=None):
        return self.inner.preprocess(image, size)


def test_a_killed_worker_loses_only_its_unfinished_frames(ray_local, inputs, reference, tmp_path):
    marker = str(tmp_path / "died")
    opts = BatchOptions(source=sources(inputs), out=str(tmp_path / "out"), model="deeplabv3plus_camvid",
                        size=(64, 96), threads=1, chunk_frames=3, batch_size=2, quiet=True, ray="local", workers=2)
    summary = run_batch(opts, backend_factory=lambda: DyingBackend(marker))
    assert os.path.exists(marker)
    # The worker died in its first chunk's second model call (3 frames, batch 2): the 2 frames of
    # the first call were on disk, so the chunk's next attempt skipped them and redid the third.
    assert (summary["frames_retried"], summary["frames_skipped"], summary["frames_processed"]) == (1, 2, 13)
    assert summary["frames_failed"] == 0 and summary["complete"]
    assert_same(tmp_path / "out", reference)


class SlowBackend:
    """The real model, 0.3 s slower per call: a run long enough to be stopped part-way."""

    def __init__(self):
        self.inner = open_backend("deeplabv3plus_camvid")
        self.meta, self.runtime = self.inner.meta, self.inner.runtime

    def infer(self, batch):
        time.sleep(0.3)
        return self.inner.infer(batch)

    def preprocess(self, image, size=None):
        return self.inner.preprocess(image, size)


@pytest.fixture
def plain_ctrl_c():
    """Ctrl+C as Python's own KeyboardInterrupt for one test: the handler an earlier in-process
    rtseg.cli.main installed records the signal process-wide, and the next command would stop."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_run_stopped_part_way_resumes(ray_local, inputs, reference, tmp_path, plain_ctrl_c):
    out = tmp_path / "out"
    opts = BatchOptions(source=sources(inputs), out=str(out), model="deeplabv3plus_camvid", size=(64, 96),
                        threads=1, chunk_frames=3, batch_size=2, quiet=True, ray="local", workers=2)
    main = threading.get_ident()

    def ctrl_c_after_two_masks():
        while len(list((out / "masks").rglob("*.png"))) < 2:
            time.sleep(0.02)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=ctrl_c_after_two_masks, daemon=True).start()
    summary = run_batch(opts, backend_factory=SlowBackend)
    assert summary["interrupted"] and not summary["complete"]
    time.sleep(1.0)  # stopped workers write nothing more
    done = sorted(str(p.relative_to(out)) for p in (out / "masks").rglob("*.png"))
    assert 2 <= len(done) < 15
    assert sorted(str(p.relative_to(out)) for p in (out / "masks").rglob("*.png")) == done
    summary = run_batch(opts, backend_factory=SlowBackend)
    assert summary["complete"] and summary["frames_skipped"] >= len(done)
    assert summary["frames_processed"] + summary["frames_skipped"] == 15
    assert not list(out.rglob(".*.incomplete.*"))
    assert_same(out, reference)


def test_a_corrupt_video_among_good_inputs_is_reported_and_skipped(ray_local, inputs, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes((inputs / "a.mp4").read_bytes()[:300])  # a download cut short: header only
    imgs = tmp_path / "imgs"
    shutil.copytree(inputs / "imgs", imgs)
    (imgs / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    code = rtseg.cli.main(["batch", "--source", str(inputs / "b.mp4"), "--source", str(broken), "--source", str(imgs),
                           "--out", str(out), "--ray", "--workers", "2", *OPTS])
    captured = capsys.readouterr()
    assert code == 1
    assert "skipped input" in captured.err and "broken.mp4" in captured.err and "zz_corrupt.png" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert [f["source"] for f in summary["failed_inputs"]] == [str(broken)]
    assert summary["frames_processed"] == 8 and summary["frames_failed"] == 1 and summary["complete"]
    assert len(list((out / "masks" / "b").glob("*.png"))) == 5 and len(list((out / "masks" / "imgs").glob("*.png"))) == 3


def test_an_unreachable_cluster_is_one_line_exit_2(inputs, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "rtseg", "batch", "--source", str(inputs / "imgs"), "--out",
                           str(tmp_path / "out"), "--ray", "127.0.0.1:1", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=120)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "\n" not in err
    assert err.startswith("rtseg batch: error: cannot reach the Ray cluster at 127.0.0.1:1")


def test_the_exported_int8_runtime_runs_locally_and_on_ray(ray_local, inputs, tmp_path):
    """--backend openvino: the INT8 export behind its accuracy gate (rtseg run's selection), built
    once by the driver; the workers open the copy in OUT and write the masks of the local run."""
    args = ["--source", str(inputs / "b.mp4"), "--source", str(inputs / "imgs"), *OPTS, "--backend", "openvino",
            "--engines", str(tmp_path / "engines"), "--quiet", "--no-overlay"]
    assert rtseg.cli.main(["batch", *args, "--out", str(tmp_path / "local")]) == 0
    assert rtseg.cli.main(["batch", *args, "--out", str(tmp_path / "ray"), "--ray", "--workers", "2"]) == 0
    local = json.loads((tmp_path / "local" / "summary.json").read_text())
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["runtime"] == local["runtime"] == "openvino"
    assert summary["precision"] == local["precision"] == summary["settings"]["precision"]
    assert summary["frames_processed"] == 8
    names = sorted(str(p.relative_to(tmp_path / "local")) for p in (tmp_path / "local" / "masks").rglob("*.png"))
    assert len(names) == 8
    for name in names:
        assert np.array_equal(cv2.imread(str(tmp_path / "local" / name), cv2.IMREAD_UNCHANGED),
                              cv2.imread(str(tmp_path / "ray" / name), cv2.IMREAD_UNCHANGED)), name
