"""``rtseg batch``: TTA identical to ``rtseg eval``, tiles, the CRF, outputs, resuming, errors."""
import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import CAMVID

import rtseg.cli
from rtseg.backends import open_backend
from rtseg.batch import BatchOptions, CRFParams, TTAOptions, dense_crf, predict_scores, run_batch, scores_to_probs
from rtseg.batch.crf import Permutohedral
from rtseg.tta import coverage, tile_windows
from rtseg.data import build_dataset
from rtseg.data.datasets import read_image_rgb
from rtseg.errors import RtsegError
from rtseg.evaluate import evaluate, predict_probs
from rtseg.metrics import ConfusionMatrix
from rtseg.pipeline.sources import SourceError

SIZE = (64, 96)


def write_clip(path, frames: int, step: int):
    """A lossless (FFV1) 64x48 clip of flat frames, grey level ``step * i``: decodes exactly."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), step * i, np.uint8))
    writer.release()
    return path


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def deeplab():
    return open_backend("deeplabv3plus_camvid")


@pytest.fixture
def camvid(tmp_path):
    """Three CamVid val frames and their labels in the CamVid layout."""
    root = tmp_path / "camvid"
    files = sorted((CAMVID / "val").glob("*.png"))[::5][:3]
    for sub in ("val", "valannot"):
        (root / sub).mkdir(parents=True)
        for f in files:
            shutil.copy(CAMVID / sub / f.name, root / sub / f.name)
    return root


class CountingBackend:
    """Wraps a backend and records the batch shape of every call."""

    def __init__(self, inner, interrupt_at=None):
        self.inner, self.meta, self.runtime = inner, inner.meta, inner.runtime
        self.shapes = []
        self.interrupt_at = interrupt_at

    def infer(self, batch):
        self.shapes.append(tuple(batch.shape))
        if len(self.shapes) == self.interrupt_at:
            raise KeyboardInterrupt  # Ctrl+C in the middle of a model call
        return self.inner.infer(batch)

    def preprocess(self, image, size=None):
        return self.inner.preprocess(image, size)


# --- TTA: the same predictions as rtseg eval -------------------------------------------------

def test_scores_equal_predict_probs_per_pixel(deeplab, camvid):
    images = [read_image_rgb(p) for p in sorted((camvid / "val").glob("*.png"))[:2]]
    for opts in (TTAOptions(SIZE, (0.75, 1.0), True), TTAOptions(SIZE)):
        ref = torch.stack([predict_probs(deeplab, im, opts.size, opts.scales, opts.flip) for im in images])
        # One image per call is exactly predict_probs' sequence of calls: bit-identical.
        ours = predict_scores(deeplab, images, opts, batch_size=1)
        assert torch.equal(ours, ref)
        # Two per call: the convolutions may round differently in the last bits.
        ours = predict_scores(deeplab, images, opts, batch_size=2)
        assert torch.allclose(ours, ref, atol=1e-4)
        assert (ours.max(1).indices == ref.max(1).indices).float().mean() > 0.9999
    probs = scores_to_probs(predict_scores(deeplab, images, TTAOptions(SIZE, (0.75, 1.0), True)),
                            TTAOptions(SIZE, (0.75, 1.0), True))
    assert torch.allclose(probs.sum(1), torch.ones(()), atol=1e-5)


def test_batch_masks_score_the_eval_miou(deeplab, camvid, tmp_path):
    out = tmp_path / "out"
    summary = run_batch(BatchOptions(source=str(camvid / "val"), out=str(out), size=SIZE, scales=(0.75, 1.0),
                                     flip=True, batch_size=2, quiet=True, score_root=str(camvid)), backend=deeplab)
    dataset = build_dataset("camvid", camvid, "val", ignore_index=11)
    expected = evaluate(deeplab, dataset, SIZE, (0.75, 1.0), True, progress=False)["miou"]
    cm = ConfusionMatrix(11, 11)
    for image_path, label_path in dataset.files:
        pred = cv2.imread(str(out / "masks" / f"{image_path.stem}.png"), cv2.IMREAD_UNCHANGED)
        label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        assert pred.dtype == np.uint8 and pred.shape == label.shape == (360, 480)
        cm.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(label.astype(np.int64)))
    assert abs(cm.compute()["miou"] - expected) < 1e-4
    assert summary["score"]["images"] == 3 and abs(summary["score"]["miou"] - expected) < 1e-4


# --- outputs, batching, resuming ---------------------------------------------------------------

def test_outputs_batching_and_resume(fake_backend, camvid, tmp_path, capsys):
    backend = CountingBackend(fake_backend())
    out = tmp_path / "out"
    opts = BatchOptions(source=str(camvid / "val"), out=str(out), batch_size=2, scales=(0.5, 1.0))
    s = run_batch(opts, backend=backend)
    assert "3/3" in capsys.readouterr().err  # the progress bar
    opts.quiet = True
    stems = sorted(p.stem for p in (camvid / "val").glob("*.png"))
    assert sorted(p.stem for p in (out / "masks").glob("*.png")) == stems
    assert sorted(p.stem for p in (out / "overlays").glob("*.jpg")) == stems
    mask = cv2.imread(str(out / "masks" / f"{stems[0]}.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (360, 480) and mask.dtype == np.uint8 and len(np.unique(mask)) > 1
    # Frames 1-2 in one call, frame 3 in another, at each of the two scales.
    assert [b[0] for b in backend.shapes] == [2, 2, 1, 1]
    assert (s["frames_total"], s["frames_processed"], s["frames_skipped"]) == (3, 3, 0)
    written = json.loads((out / "summary.json").read_text())
    assert written["settings"]["scales"] == [0.5, 1.0] and written["complete"] and written["ms_per_frame_p50"] > 0

    backend.shapes.clear()
    s = run_batch(opts, backend=backend)
    assert backend.shapes == [] and (s["frames_processed"], s["frames_skipped"]) == (0, 3)

    # An interrupted run leaves at most a hidden temporary file, which never counts as done.
    (out / "masks" / f"{stems[1]}.png").rename(out / "masks" / f".{stems[1]}.incomplete.png")
    s = run_batch(opts, backend=backend)
    assert (s["frames_processed"], s["frames_skipped"]) == (1, 2) and len(backend.shapes) == 2
    assert not list((out / "masks").glob(".*"))


def test_interrupted_run_keeps_finished_frames_and_continues(fake_backend, camvid, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    opts = BatchOptions(source=str(camvid / "val"), out=str(out), batch_size=1, quiet=True)
    s = run_batch(opts, backend=CountingBackend(fake_backend(), interrupt_at=3))
    assert s["interrupted"] and s["frames_processed"] == 2
    assert json.loads((out / "summary.json").read_text())["interrupted"]
    assert len(list((out / "masks").glob("*.png"))) == 2 and not list((out / "masks").glob(".*"))
    # The CLI exits with 130 after an interrupted run, and the next run does the rest.
    monkeypatch.setattr("rtseg.backends.open_backend", lambda spec, device=None: CountingBackend(fake_backend()))
    assert rtseg.cli.main(["batch", "--source", str(camvid / "val"), "--out", str(out), "--batch-size", "1"]) == 0
    assert "1 processed, 2 skipped of 3" in capsys.readouterr().out


def test_video_frames_are_named_by_index_and_resume_without_the_model(fake_backend, tmp_path):
    video = write_clip(tmp_path / "clip.mkv", 4, 60)
    backend = CountingBackend(fake_backend())
    opts = BatchOptions(source=str(video), out=str(tmp_path / "out"), max_frames=3, quiet=True, overlay=False)
    run_batch(opts, backend=backend)
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert not (tmp_path / "out" / "overlays").exists()
    backend.shapes.clear()
    s = run_batch(opts, backend=backend)
    assert backend.shapes == [] and s["frames_skipped"] == 3


def test_changed_settings_do_not_mix_into_old_masks(fake_backend, camvid, tmp_path):
    out = str(tmp_path / "out")
    run_batch(BatchOptions(source=str(camvid / "val"), out=out, max_frames=1, quiet=True), backend=fake_backend())
    with pytest.raises(RtsegError, match="other settings.*flip False -> True"):
        run_batch(BatchOptions(source=str(camvid / "val"), out=out, flip=True, quiet=True), backend=fake_backend())


# --- tiles -------------------------------------------------------------------------------------

@pytest.mark.parametrize("hw,tile,overlap", [((97, 131), (40, 50), 7), ((360, 480), (128, 128), 32),
                                              ((41, 50), (40, 50), 39), ((30, 131), (40, 50), 7)])
def test_tile_windows_are_full_size_and_cover_everything(hw, tile, overlap):
    windows = tile_windows(hw, tile, overlap)
    th, tw = min(tile[0], hw[0]), min(tile[1], hw[1])
    assert all(h == th and w == tw and 0 <= y <= hw[0] - h and 0 <= x <= hw[1] - w for y, x, h, w in windows)
    assert coverage(hw, windows).min() >= 1
    for axis, size in ((0, th), (1, tw)):
        starts = sorted({win[axis] for win in windows})
        assert starts[-1] == hw[axis] - size
        # neighbours overlap by at least the requested amount (or the window spans the side)
        assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:]))


def test_tiled_prediction_equals_whole_image_for_a_per_pixel_model(fake_backend):
    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 256, (10, 13, 3), dtype=np.uint8), (131, 97), interpolation=cv2.INTER_NEAREST)
    image = np.ascontiguousarray(image)
    backend = CountingBackend(fake_backend(num_classes=5))
    for flip in (False, True):
        tiled_opts = TTAOptions((97, 131), flip=flip, tile=(40, 50), overlap=7)
        whole_opts = TTAOptions((97, 131), flip=flip)
        backend.shapes.clear()
        tiled = scores_to_probs(predict_scores(backend, [image, image[::-1].copy()], tiled_opts, batch_size=2), tiled_opts)
        assert {s[2:] for s in backend.shapes} == {(40, 50)} and max(s[0] for s in backend.shapes) <= 2 * 2
        whole = scores_to_probs(predict_scores(backend, [image, image[::-1].copy()], whole_opts), whole_opts)
        assert torch.allclose(tiled, whole, atol=1e-5)
        assert torch.equal(tiled.max(1).indices, whole.max(1).indices)


def test_tile_larger_than_the_image_runs_it_whole(fake_backend):
    image = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    backend = CountingBackend(fake_backend())
    predict_scores(backend, [image], TTAOptions(tile=(64, 64), overlap=8))
    assert backend.shapes == [(1, 3, 30, 40)]


# --- CRF ---------------------------------------------------------------------------------------

def one_hot_probs(labels, classes, p=0.95):
    probs = np.full((classes,) + labels.shape, (1 - p) / (classes - 1), np.float32)
    np.put_along_axis(probs, labels[None], p, 0)
    return probs


def test_crf_keeps_a_confident_prediction_and_returns_probabilities():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    labels = np.zeros((30, 40), np.int64)
    labels[:, 20:] = 1
    labels[15:, :10] = 2
    q = dense_crf(one_hot_probs(labels, 3), image)
    assert q.shape == (3, 30, 40) and q.dtype == np.float32 and np.isfinite(q).all()
    assert q.min() >= 0 and q.max() <= 1 and np.allclose(q.sum(0), 1, atol=1e-5)
    assert np.array_equal(q.argmax(0), labels)


def test_crf_removes_an_isolated_flip_in_a_uniform_region():
    image = np.full((30, 40, 3), 128, np.uint8)
    probs = np.empty((3, 30, 40), np.float32)
    probs[:] = np.array([0.7, 0.2, 0.1], np.float32)[:, None, None]
    probs[:, 15, 20] = (0.3, 0.6, 0.1)
    assert probs.argmax(0)[15, 20] == 1
    assert (dense_crf(probs, image).argmax(0) == 0).all()


def test_crf_moves_a_label_boundary_onto_the_colour_edge():
    image = np.zeros((30, 40, 3), np.uint8)
    image[:, :20] = (30, 60, 40)
    image[:, 20:] = (200, 180, 160)
    probs = np.empty((2, 30, 40), np.float32)
    probs[0] = 0.4
    probs[0, :, :25] = 0.6   # the network's boundary is 5 px right of the edge
    probs[1] = 1 - probs[0]
    expected = np.zeros((30, 40), np.int64)
    expected[:, 20:] = 1
    assert np.array_equal(dense_crf(probs, image).argmax(0), expected)
    # Without the appearance kernel nothing pulls the boundary onto the edge.
    q = dense_crf(probs, image, CRFParams(w_appearance=0.0))
    assert not np.array_equal(q.argmax(0), expected)


def test_permutohedral_filter_approximates_the_gaussian():
    rng = np.random.default_rng(0)
    feats = rng.random((500, 3)) * 5
    exact = np.exp(-((feats[:, None] - feats[None]) ** 2).sum(-1) / 2)
    lattice = Permutohedral(feats)
    approx = lattice.filter(np.eye(500, dtype=np.float32))  # column j: the kernel around point j
    assert np.corrcoef(approx.ravel(), exact.ravel())[0, 1] > 0.97
    signal = np.sin(feats[:, :1]).astype(np.float32)
    smooth_exact = exact @ signal / exact.sum(1, keepdims=True)
    smooth = lattice.filter(signal) / lattice.filter(np.ones((500, 1), np.float32))
    assert np.abs(smooth - smooth_exact).mean() < 0.1 * smooth_exact.std()


def test_crf_run_through_the_cli(deeplab, camvid, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("rtseg.backends.open_backend", lambda spec, device=None: deeplab)
    out = tmp_path / "out"
    code = rtseg.cli.main(["batch", "--source", str(camvid / "val"), "--out", str(out), "--size", "64x96",
                           "--max-frames", "1", "--crf", "--crf-iters", "2", "--no-overlay", "--quiet"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["crf"]["iterations"] == 2 and summary["frames_processed"] == 1
    assert len(list((out / "masks").glob("*.png"))) == 1


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["model", "missing", "empty", "out", "overlap", "overlap_without_tile"])
def test_bad_input_is_one_line_exit_2(case, camvid, tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    args = {"source": str(camvid / "val"), "out": str(tmp_path / "out"), "model": "deeplabv3plus_camvid"}
    extra = []
    if case == "model":
        args["model"] = "no_such_model"
    elif case == "missing":
        args["source"] = str(tmp_path / "nope")
    elif case == "empty":
        args["source"] = str(tmp_path / "empty")
    elif case == "out":
        args["out"] = str(tmp_path / "file" / "out")
    elif case == "overlap":
        extra = ["--tile", "32x40", "--overlap", "32"]
    else:
        extra = ["--overlap", "8"]
    code = rtseg.cli.main(["batch", "--quiet", *[v for k, a in args.items() for v in (f"--{k}", a)], *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("rtseg batch: error: ") and "\n" not in err
    assert {"model": "no_such_model", "missing": "not found", "empty": "no images", "out": "cannot create",
            "overlap": "smaller than", "overlap_without_tile": "needs --tile"}[case] in err


def test_class_id_artifacts_refuse_score_averaging_but_run_plain(fake_backend, camvid, tmp_path):
    ids = fake_backend(ids=True)
    for kw in ({"flip": True}, {"tile": (32, 32)}, {"crf": CRFParams()}):
        with pytest.raises(RtsegError, match="argmax in graph"):
            run_batch(BatchOptions(source=str(camvid / "val"), out=str(tmp_path / "o"), quiet=True, **kw), backend=ids)
    s = run_batch(BatchOptions(source=str(camvid / "val"), out=str(tmp_path / "plain"), quiet=True), backend=ids)
    assert s["frames_processed"] == 3
    mask = cv2.imread(str(next((tmp_path / "plain" / "masks").glob("*.png"))), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (360, 480)


def test_option_checks(tmp_path):
    with pytest.raises(RtsegError, match="--batch-size"):
        BatchOptions(source="x", out="y", batch_size=0)
    with pytest.raises(RtsegError, match="--crf-iters"):
        CRFParams(iterations=0)
    with pytest.raises(RtsegError, match="--scales"):
        TTAOptions(scales=(1.0, -0.5))
    with pytest.raises(SourceError):
        run_batch(BatchOptions(source=str(tmp_path / "nowhere" / "*.png"), out=str(tmp_path / "out"), quiet=True))


# --- several inputs, chunks, unreadable inputs (local; the Ray runs are in test_batch_ray.py) ---

def test_video_ranges_and_image_runs():
    from rtseg.batch.inputs import Input, plan_chunks

    inputs = [Input("v.mp4", "video", "v", frames=7), Input("d", "images", "d", files=[f"d/{i}.png" for i in range(4)]),
              Input("u.mkv", "video", "u", frames=None)]
    chunks = plan_chunks(inputs, 3)
    assert [(c.kind, c.start, c.end, c.total) for c in chunks[:3]] == [("video", 0, 3, 3), ("video", 3, 6, 3),
                                                                       ("video", 6, None, 1)]
    assert chunks[2].names() == ["000006"]  # the last range reads on to the real end of the video
    assert [c.files for c in chunks[3:5]] == [["d/0.png", "d/1.png", "d/2.png"], ["d/3.png"]]
    assert chunks[5].names() is None and [c.id for c in chunks] == list(range(6))
    assert [(c.start, c.end, c.total) for c in plan_chunks(inputs[:1], 3, max_frames=4)] == [(0, 3, 3), (3, 4, 1)]


def test_several_inputs_from_a_list_file_with_a_corrupt_video(fake_backend, camvid, tmp_path, capsys, monkeypatch):
    write_clip(tmp_path / "clip.mkv", 5, 50)
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# drives\nclip.mkv\n\nbroken.mp4\n{camvid / 'val'}\n")
    out = tmp_path / "out"
    summary = run_batch(BatchOptions(source=[str(listing)], out=str(out), chunk_frames=2, batch_size=2, quiet=True),
                        backend=fake_backend())
    assert "skipped input" in capsys.readouterr().err
    assert [i["label"] for i in summary["inputs"]] == ["clip", "val"]
    assert [f["source"] for f in summary["failed_inputs"]] == [str(tmp_path / "broken.mp4")]
    assert sorted(p.name for p in (out / "masks" / "clip").iterdir()) == [f"{i:06d}.png" for i in range(5)]
    assert len(list((out / "masks" / "val").glob("*.png"))) == 3
    assert (summary["frames_processed"], summary["chunks"]) == (8, 5)
    # The CLI finishes the job and exits 1: an input failed. A missing source refuses to start (2).
    monkeypatch.setattr("rtseg.backends.open_backend", lambda spec, device=None: fake_backend())
    assert rtseg.cli.main(["batch", "--source", str(listing), "--out", str(out), "--quiet"]) == 1
    assert rtseg.cli.main(["batch", "--source", str(listing), "--source", str(tmp_path / "nope.mp4"),
                           "--out", str(out), "--quiet"]) == 2
    assert "source not found" in capsys.readouterr().err


def test_a_video_range_past_the_real_end_counts_the_missing_frames_as_failed(fake_backend, tmp_path):
    from rtseg.batch.inputs import Chunk
    from rtseg.batch.work import ChunkWorker

    video = write_clip(tmp_path / "clip.mkv", 5, 50)
    opts = BatchOptions(source=str(video), out=str(tmp_path / "out"), quiet=True, overlay=False)
    # A container that declared 8 frames: the range 2..8 holds 3 real ones.
    chunk = Chunk(0, "video", "", str(video), start=2, end=8, total=6)
    result = ChunkWorker(fake_backend(), opts).run(chunk)
    assert (result["processed"], result["skipped"], result["failed"], result["error"]) == (3, 0, 3, None)
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["000002.png", "000003.png", "000004.png"]
    assert len(result["warnings"]) == 1 and "ended after 5 of the 8 frames" in result["warnings"][0]
