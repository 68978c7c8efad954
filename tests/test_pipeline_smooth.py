"""`rtseg run --smooth / --flicker` in the threaded pipeline: every frame of a file in order, the
flicker figures in the summary and the JSON, live drops resetting the smoother."""
import json

import pytest
from conftest import CLIP
from test_pipeline_live import FakeCamera
from test_pipeline_run import decode

from rtseg.cli import main
from rtseg.pipeline import RunOptions, run
from rtseg.pipeline.stats import format_summary
from rtseg.temporal.smooth import DEFAULT_ALPHA, DEFAULT_HOLD


def test_smooth_flow_keeps_every_frame_and_reports_flicker(fake_backend, tmp_path):
    stats = tmp_path / "s.json"
    summary = run(RunOptions(source=str(CLIP), smooth="flow", json=str(stats), quiet=True),
                  backend=fake_backend(input_size=(54, 96)))
    assert summary["frames"] == 221 and summary["dropped"] == 0
    result = json.loads(stats.read_text())
    assert [r["name"] for r in result["frames"]] == [f"{i:06d}" for i in range(221)]  # every frame, in order
    saved = result["summary"]
    assert saved["smooth"] == {"mode": "flow", "alpha": DEFAULT_ALPHA, "hold": DEFAULT_HOLD,
                                "resets": 0}  # no cut in the clip
    assert saved["flicker"]["pairs"] == 220
    assert 0 < saved["flicker"]["tc"] <= 100 and 0 <= saved["flicker"]["changed"] < 100
    assert "flicker: TC" in format_summary(summary)


def test_flicker_is_opt_in_without_smoothing(fake_backend):
    plain = run(RunOptions(source=str(CLIP), max_frames=5, quiet=True), backend=fake_backend())
    assert "flicker" not in plain and plain["smooth"]["mode"] == "off"
    measured = run(RunOptions(source=str(CLIP), max_frames=5, flicker=True, quiet=True), backend=fake_backend())
    assert measured["flicker"]["pairs"] == 4


def test_argmax_in_graph_artifact_is_smoothed(fake_backend):
    summary = run(RunOptions(source=str(CLIP), max_frames=10, smooth="ema", quiet=True),
                  backend=fake_backend(ids=True))
    assert summary["frames"] == 10 and summary["flicker"]["pairs"] == 9


def test_live_drops_reset_the_smoother_files_do_not(fake_backend):
    camera = FakeCamera(n=120, fps=500)  # frames come faster than the 20 ms inference: drops
    live = run(RunOptions(source="camera", smooth="flow", quiet=True), backend=fake_backend(delay=0.02), source=camera)
    assert live["dropped"] > 0 and live["frames"] + live["dropped"] == 120
    assert live["smooth"]["resets"] > 0
    files = run(RunOptions(source="camera", smooth="flow", quiet=True), backend=fake_backend(delay=0.002),
                source=FakeCamera(n=40, fps=1000, live=False))
    assert files["frames"] == 40 and files["smooth"]["resets"] == 0


def test_cli_rejects_a_bad_alpha_in_one_line_before_any_work(tmp_path, capsys):
    code = main(["run", "--source", str(CLIP), "--json", str(tmp_path / "s.json"), "--quiet", "--smooth", "ema",
                 "--smooth-alpha", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--smooth-alpha must be in (0, 1]" in err[0]
    assert not (tmp_path / "s.json").exists()


def test_cli_rejects_a_bad_hold_in_one_line_and_passes_a_good_one(tmp_path, capsys, fake_backend, monkeypatch):
    code = main(["run", "--source", str(CLIP), "--quiet", "--smooth", "flow", "--smooth-hold", "1.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--smooth-hold must be in [0, 1)" in err[0]
    import rtseg.pipeline as pipeline

    seen = {}
    monkeypatch.setattr(pipeline, "run", lambda opts: seen.setdefault("opts", opts) and {})
    main(["run", "--source", str(CLIP), "--quiet", "--smooth", "flow", "--smooth-hold", "0.25"])
    assert seen["opts"].smooth_hold == 0.25


def test_cli_rejects_an_unknown_mode(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--source", str(CLIP), "--smooth", "median"])
    assert exc.value.code == 2 and "invalid choice: 'median'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_smooth_flow_on_the_clip_with_a_real_model(tmp_path, one_torch_thread):
    out, stats = tmp_path / "o.mp4", tmp_path / "s.json"
    assert main(["run", "--source", str(CLIP), "--model", "enet_camvid", "--backend", "torch", "--threads", "1",
                 "--smooth", "flow", "--output", str(out), "--json", str(stats), "--quiet"]) == 0
    summary = json.loads(stats.read_text())["summary"]
    assert summary["frames"] == 221 and summary["dropped"] == 0
    assert summary["flicker"]["pairs"] == 220 and summary["flicker"]["tc"] > 50
    assert len(decode(out)) == 221
