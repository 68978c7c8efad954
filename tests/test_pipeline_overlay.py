"""Overlay drawing (palette, alpha, modes, ignore, legend, HUD) and the statistics summary."""
import numpy as np
import pytest

from rtseg.errors import RtsegError
from rtseg.pipeline.overlay import Renderer, Style, parse_ignore
from rtseg.pipeline.stats import Stats, format_summary, percentiles

COLORS = [[128, 64, 128], [70, 70, 70], [220, 20, 60], [0, 0, 142]]  # RGB
NAMES = ["road", "building", "person", "car"]


def scene():
    """A 60x80 frame and a mask: class 0 left half, class 2 a square, class 3 nowhere."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    mask = np.ones((60, 80), np.uint8)
    mask[:, :40] = 0
    mask[20:40, 50:70] = 2
    return frame, mask


def bgr(c):
    return np.array(COLORS[c][::-1], np.uint8)


def plain(mode="overlay", alpha=0.5, ignore=()):
    return Renderer(COLORS, NAMES, Style(mode, alpha, hud=False, legend=False), list(ignore))


def test_mask_mode_is_the_palette_in_bgr():
    frame, mask = scene()
    out = plain("mask").render(frame, mask)
    assert out.shape == frame.shape and out.dtype == np.uint8
    for c in (0, 1, 2):
        assert (out[mask == c] == bgr(c)).all()


def test_alpha_blends_frame_and_palette():
    frame, mask = scene()
    assert np.array_equal(plain(alpha=0.0).render(frame, mask), frame)
    assert np.array_equal(plain(alpha=1.0).render(frame, mask), plain("mask").render(frame, mask))
    half = plain(alpha=0.5).render(frame, mask).astype(int)
    expected = (frame.astype(int) + np.take(np.stack([bgr(c) for c in range(4)]), mask, axis=0)) / 2
    assert np.abs(half - expected).max() <= 1


def test_ignored_classes_show_the_frame_and_are_black_in_the_palette():
    frame, mask = scene()
    out = plain(alpha=0.7, ignore=[0]).render(frame, mask)
    assert np.array_equal(out[mask == 0], frame[mask == 0])
    assert not np.array_equal(out[mask == 1], frame[mask == 1])
    assert (plain("mask", ignore=[0]).render(frame, mask)[mask == 0] == 0).all()


def test_side_by_side_is_frame_then_palette():
    frame, mask = scene()
    out = plain("side").render(frame, mask)
    assert out.shape == (60, 160, 3)
    assert np.array_equal(out[:, :80], frame)
    assert np.array_equal(out[:, 80:], plain("mask").render(frame, mask))


def test_legend_lists_exactly_the_classes_present():
    frame = np.zeros((240, 320, 3), np.uint8)
    mask = np.ones((240, 320), np.uint8)
    mask[100:150, 100:150] = 2
    # alpha 0 leaves the black frame, so every coloured pixel is a legend swatch
    out = Renderer(COLORS, NAMES, Style(alpha=0.0, hud=False), [2]).render(frame, mask)
    found = {c for c in range(4) if (out == bgr(c)).all(-1).any()}
    assert found == {1}  # class 2 is ignored, classes 0 and 3 absent
    assert out[:, :160].max() == 0  # top-right corner only


def test_hud_touches_only_the_top_left_corner():
    frame, mask = scene()
    frame = np.repeat(np.repeat(frame, 4, 0), 4, 1)
    mask = np.repeat(np.repeat(mask, 4, 0), 4, 1)  # 240x320
    r = Renderer(COLORS, NAMES, Style(hud=True, legend=False))
    diff = np.any(r.render(frame, mask, "12.3 FPS  latency 80 ms") != r.render(frame, mask, None), axis=-1)
    ys, xs = np.nonzero(diff)
    assert len(ys) and ys.max() < 40 and xs.min() == 0


def test_each_render_returns_a_new_image():
    frame, mask = scene()
    r = plain()
    a = r.render(frame, mask)
    kept = a.copy()
    r.render(frame, np.zeros_like(mask))
    assert np.array_equal(a, kept)  # sinks read frames on another thread: no buffer reuse


def test_style_validation_and_keys():
    with pytest.raises(RtsegError, match="--mode"):
        Style(mode="blend")
    with pytest.raises(RtsegError, match="--alpha"):
        Style(alpha=1.5)
    s = Style()
    s.next_mode()
    s.next_mode()
    assert s.mode == "side"
    s.next_mode()
    assert s.mode == "overlay"
    for _ in range(8):
        s.change_alpha(0.1)
    assert s.alpha == 1.0


def test_window_keys_change_the_shared_style():
    import threading

    from rtseg.pipeline.sinks import handle_key

    style, stop = Style(), threading.Event()
    assert handle_key(ord(" "), style, stop) is True  # pause
    handle_key(ord("m"), style, stop)
    handle_key(ord("-"), style, stop)
    assert (style.mode, style.alpha, stop.is_set()) == ("mask", 0.4, False)
    handle_key(255, style, stop)  # waitKey's "no key"
    handle_key(ord("q"), style, stop)
    assert stop.is_set()


def test_parse_ignore_is_case_insensitive_and_lists_valid_names():
    assert parse_ignore("Road, CAR", NAMES) == [0, 3]
    assert parse_ignore(None, NAMES) == []
    with pytest.raises(RtsegError, match="unknown class 'sky'.*road, building"):
        parse_ignore("sky", NAMES)


def test_percentiles_and_summary():
    p = percentiles([1.0, 2.0, 3.0, 4.0])
    assert p == {"mean": 2.5, "p50": 2.5, "p95": 3.85, "p99": 3.97, "max": 4.0}
    stats = Stats()
    stats.start()
    for i, ms in enumerate((10.0, 30.0)):
        stats.add(i, f"{i:06d}", {"inference": ms}, t_capture=stats.t_start)
    stats.drops["capture"], stats.drops["preprocess"] = 2, 1
    s = stats.summary()
    assert s["frames"] == 2 and s["dropped"] == 3 and s["model_fps_in_pipeline"] == 50.0
    assert s["stages_ms"]["inference"]["p50"] == 20.0 and s["stages_ms"]["capture"]["mean"] == 0.0
    assert s["fps"] > 0 and s["latency_ms"]["max"] >= s["latency_ms"]["p50"] > 0
    assert "dropped 3" in format_summary({**s, "interrupted": True}) and "(interrupted)" in format_summary(
        {**s, "interrupted": True})
    # Without the measurement alone there is no model-only figure, and no ratio made up from the
    # pipeline's own inference time.
    assert "model-only not measured" in format_summary(s) and "ratio" not in format_summary(s)
    line = format_summary({**s, "model_fps": 40.0, "stage_cpu_ms": {k: 1.5 for k in s["stages_ms"]}})
    assert "model-only 40.00 (measured alone)" in line and "ratio" in line and "preprocess 1.5" in line
