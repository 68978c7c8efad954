"""``rtseg run --serve``: the hub's frame policy and controls, then a real served run over HTTP
(several viewers, one that leaves mid-frame, one that stops reading, SIGTERM) and a port in use."""
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from serve_helpers import MODEL, ServedRun, Viewer, free_port, get_json, post_json, refused
from conftest import CLIP
from stream_helpers import count_files, start_run, wait_for

from rtseg.errors import RtsegError
from rtseg.pipeline.overlay import Style
from rtseg.serve import Hub, parse_address


def frame(i: int) -> SimpleNamespace:
    """A solid frame whose grey level says which one it is."""
    image = np.full((24, 32, 3), 10 * i, np.uint8)
    return SimpleNamespace(image=image, view=image.copy(), mask=np.full((24, 32), i % 3, np.uint8),
                           name=f"{i:06d}", t_capture=time.perf_counter())


@pytest.fixture
def hub(tmp_path):
    h = Hub(Style(), tmp_path / "snaps")
    h.attach(None, threading.Event(), SimpleNamespace(class_names=["a", "b", "c"], colors=[[0, 0, 0]] * 3), {})
    yield h
    h.end()


def wait_encoded(hub: Hub, seq: int) -> None:
    deadline = time.monotonic() + 10
    while (hub._jpeg is None or hub._jpeg[0] < seq) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_nothing_is_encoded_until_someone_watches_then_only_the_newest_frame(hub):
    for i in range(1, 6):
        hub.publish(frame(i))
    time.sleep(0.3)
    assert hub.encoded == 0 and hub.figures()["viewers"] == 0
    viewer = hub.frames()
    first, _ = next(viewer)  # connecting starts the encoder on the newest frame
    assert cv2.imdecode(np.frombuffer(first, np.uint8), cv2.IMREAD_GRAYSCALE).mean() == pytest.approx(50, abs=2)
    for i in range(6, 11):   # five more while the viewer is busy elsewhere
        hub.publish(frame(i))
    wait_encoded(hub, 10)
    newest, _ = next(viewer)
    # The viewer gets frame 10, not 6: no backlog, and the frames it never saw are counted.
    assert cv2.imdecode(np.frombuffer(newest, np.uint8), cv2.IMREAD_GRAYSCALE).mean() == pytest.approx(100, abs=2)
    assert hub.viewer_skipped == 4
    viewer.close()
    assert hub.figures()["viewers"] == 0
    assert [c["name"] for c in hub.figures()["classes"]] == ["b"]  # frame 10's mask is all class 1


def test_controls_change_the_style_and_refuse_bad_values(hub):
    assert hub.control({"mode": "side", "alpha": 0.25}) == {"mode": "side", "alpha": 0.25, "paused": False}
    assert (hub.style.mode, hub.style.alpha) == ("side", 0.25)
    for bad in ({"mode": "blur"}, {"alpha": 1.5}, {"alpha": "x"}, {"alpha": True}, {"paused": "yes"}, {"speed": 2}):
        with pytest.raises(RtsegError):
            hub.control(bad)
    assert (hub.style.mode, hub.style.alpha) == ("side", 0.25)


def test_pause_holds_the_sink_until_resumed_or_stopped(hub):
    hub.control({"paused": True})
    sink = threading.Thread(target=hub.publish, args=(frame(1),))
    sink.start()
    sink.join(0.5)
    assert sink.is_alive()            # the pipeline's sink thread waits: the run is paused
    hub.control({"paused": False})
    sink.join(5)
    assert not sink.is_alive()
    hub.control({"paused": True})
    sink = threading.Thread(target=hub.publish, args=(frame(2),))
    sink.start()
    hub.stop.set()                    # Ctrl+C, q, an error: never stuck in a pause
    sink.join(5)
    assert not sink.is_alive()


def test_snapshot_writes_frame_overlay_and_mask(hub, tmp_path):
    with pytest.raises(RtsegError, match="no frame yet"):
        hub.snapshot()
    hub.publish(frame(3))
    files = hub.snapshot()
    assert sorted(f.rsplit("_", 1)[1] for f in files) == ["frame.png", "mask.png", "overlay.jpg"]
    mask = cv2.imread(next(f for f in files if f.endswith("mask.png")), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (24, 32) and (mask == 0).all()


def test_serve_address_forms():
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    for bad in ("http", "host:", ":80", "1:99999"):
        with pytest.raises(RtsegError, match=r"\[HOST:\]PORT"):
            parse_address(bad)


def rtseg_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rtseg", "run", *args], capture_output=True, text=True, timeout=120)


def test_a_port_in_use_is_one_line_before_the_model_loads():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The model name is wrong too: the port is checked first, so the error is about the port.
        result = rtseg_run("--model", "no_such_model", "--serve", str(port))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"rtseg run: error: --serve {port}: port {port} is already in use on 127.0.0.1; "
        f"choose another, e.g. --serve {port + 1}"]
    bad = rtseg_run("--serve", "localhost:http")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "[HOST:]PORT" in bad.stderr


@pytest.mark.slow
def test_several_viewers_one_leaving_one_stalled_and_sigterm(tmp_path):
    js = tmp_path / "run.json"
    run = ServedRun("--json", str(js))
    viewers = []
    try:
        assert run.stats()["encoded"] == 0  # frames flow, nobody watches: nothing is encoded
        status, health = get_json(run.url + "/healthz")
        assert status == 200 and health["state"] == "running"
        leaving, steady = Viewer(run.port), Viewer(run.port)
        stalled = Viewer(run.port, rcvbuf=4096)  # connects, then never reads again
        viewers = [leaving, steady, stalled]
        for v in (leaving, steady):
            jpeg = cv2.imdecode(np.frombuffer(v.frame(), np.uint8), cv2.IMREAD_COLOR)
            assert jpeg.shape == (540, 960, 3)
        leaving.half_frame_then_close()
        seen = {steady.frame() for _ in range(6)}
        assert len(seen) == 6  # a new picture each time, the stalled viewer notwithstanding
        wait_for(lambda: run.stats()["viewers"] == 2, run.proc, 60, "the closed viewer to be let go")
        before = run.stats()["frames"]
        wait_for(lambda: run.stats()["frames"] >= before + 5, run.proc, 60, "frames with a stalled viewer")
        stats = run.stats()
        assert stats["encoded"] > 0 and stats["runtime"] == "torch" and stats["classes"]
        stdout, stderr = run.stop(signal.SIGTERM)
        assert steady.ended()  # the stream ends with the run
    finally:
        run.stop(signal.SIGKILL)
        for v in viewers:
            v.close()
    assert run.proc.returncode == 143, stderr
    assert refused(run.port)
    summary = json.loads(js.read_text())["summary"]
    assert summary["ending"] == "interrupted" and summary["signal"] == "SIGTERM"
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_bad_control_requests_are_refused_and_healthz_says_paused(tmp_path):
    run = ServedRun("--snapshot-dir", str(tmp_path / "snaps"))
    try:
        assert post_json(run.url + "/control", {"mode": "blur"}) == (
            400, {"error": "mode must be one of overlay, mask, side, got 'blur'"})
        assert post_json(run.url + "/nothing")[0] == 404
        # A form or text/plain POST (what another site can send without asking) is refused.
        req = urllib.request.Request(run.url + "/control", data=b'{"paused": true}', method="POST",
                                     headers={"Content-Type": "text/plain"})
        with pytest.raises(urllib.error.HTTPError, match="415"):
            urllib.request.urlopen(req, timeout=10)
        assert run.stats()["paused"] is False
        assert post_json(run.url + "/control", {"paused": True})[1]["paused"] is True
        status, health = get_json(run.url + "/healthz")
        assert status == 200 and health["state"] == "paused"
        status, snap = post_json(run.url + "/snapshot")
        assert status == 200 and len(snap["files"]) == 3
        stdout, stderr = run.stop(signal.SIGINT)  # a paused run still stops on Ctrl+C
    finally:
        run.stop(signal.SIGKILL)
    assert run.proc.returncode == 130, stderr
    assert refused(run.port)


def test_the_end_of_a_file_ends_the_streams_and_the_server(tmp_path):
    port = free_port()
    proc = start_run("--source", str(CLIP), *MODEL, "--max-frames", "6", "--serve", str(port),
                     "--save-masks", str(tmp_path / "masks"))
    try:
        # The server listens before the model loads: a viewer can be waiting for the first frame.
        wait_for(lambda: not refused(port), proc, 60, "the server")
        viewer = Viewer(port)
        got = 0
        try:
            while True:
                viewer.frame()
                got += 1
        except EOFError:
            pass
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert 1 <= got <= 6 and count_files(tmp_path / "masks") == 6
    assert refused(port) and "Traceback" not in stderr
