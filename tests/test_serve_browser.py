"""The live view in a real browser: Debian's chromium, headless, driven over the DevTools protocol,
watching one ``rtseg run --serve`` on a real (ffmpeg-served, looping) stream for the whole module."""
import signal
import struct
from pathlib import Path

import cv2
import pytest
from serve_helpers import ServedRun, refused

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The image the page shows, read back from the page itself: size and a checksum of sampled
# pixels, and the share of pixels within a small distance of a colour of the classes present.
SAMPLE = """(async () => {
  const img = document.getElementById('stream');
  if (!img.naturalWidth) return null;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  const colors = (await (await fetch('/stats')).json()).classes.map((k) => k.color);
  let sum = 0, n = 0, near = 0;
  for (let i = 0; i < d.length; i += 4 * 101) {
    sum = (sum * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) % 1000000007; n++;
    if (colors.some((k) => Math.abs(k[0] - d[i]) + Math.abs(k[1] - d[i + 1]) + Math.abs(k[2] - d[i + 2]) < 40)) near++;
  }
  return {width: c.width, height: c.height, sum: sum, palette: near / n};
})()"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    snaps = tmp_path_factory.mktemp("snaps")
    run = ServedRun("--snapshot-dir", str(snaps))
    run.snaps = snaps
    yield run
    stdout, stderr = run.stop(signal.SIGINT)
    assert run.proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert refused(run.port)


@pytest.fixture(scope="module")
def page(served):
    from cdp import Chromium

    browser = Chromium()
    try:
        browser.goto(served.url + "/")
        yield browser
    finally:
        browser.close()


def text(page, element_id: str) -> str:
    return page.js(f"document.getElementById('{element_id}').textContent")


def click(page, element_id: str) -> None:
    page.js(f"document.getElementById('{element_id}').click()")


def test_the_page_shows_a_moving_overlay_and_the_figures(page, tmp_path):
    first = page.wait_for(SAMPLE, what="the first frame in the page")
    assert (first["width"], first["height"]) == (960, 540)
    # The picture changes: the stream is live, not one frame.
    page.wait_for(f"(async () => {{ const s = await {SAMPLE}; return s && s.sum !== {first['sum']}; }})()",
                  what="a new picture")
    page.wait_for("document.getElementById('frames').textContent !== '-'", what="the figures")
    assert float(text(page, "fps")) > 0 and float(text(page, "model-fps")) > 0
    page.wait_for("Number(document.getElementById('lat-p50').textContent) > 0", what="a latency")
    assert (text(page, "runtime"), text(page, "precision")) == ("torch", "fp32")
    assert "Road" in text(page, "classes") and "%" in text(page, "classes")
    shot = page.screenshot()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", shot[16:24]) == (1280, 720)


def test_the_mode_and_alpha_controls_change_what_is_drawn(page, served):
    overlay = page.wait_for(SAMPLE)
    click(page, "mode-side")
    page.wait_for(f"(async () => {{ const s = await {SAMPLE}; return s && s.width === 1920; }})()",
                  what="side by side")
    click(page, "mode-mask")
    page.wait_for(f"(async () => {{ const s = await {SAMPLE}; return s && s.width === 960 && s.palette > 0.9; }})()",
                  what="the palette-only mask")
    click(page, "mode-overlay")
    back = page.wait_for(f"(async () => {{ const s = await {SAMPLE}; return s && s.palette < 0.9 && s; }})()",
                         what="the overlay again")
    assert back["width"] == overlay["width"] == 960
    page.js("const a = document.getElementById('alpha'); a.value = 0.8; a.dispatchEvent(new Event('input'))")
    page.wait_for("document.getElementById('alpha-value').textContent === '0.80'", what="alpha 0.8")
    assert served.stats()["alpha"] == 0.8


def test_pause_holds_the_run_and_resume_goes_on(page, served):
    click(page, "pause")
    page.wait_for("document.getElementById('state').textContent === 'paused'", what="paused")
    held = page.wait_for("""(async () => {
        const a = (await (await fetch('/stats')).json()).frames;
        await new Promise((r) => setTimeout(r, 1500));
        const b = (await (await fetch('/stats')).json()).frames;
        return a === b && b; })()""", what="the frame count to stand still")
    click(page, "pause")
    page.wait_for(f"(async () => (await (await fetch('/stats')).json()).frames > {held} + 2)()",
                  what="frames after resuming")


def test_the_snapshot_button_writes_the_frame_and_its_mask(page, served):
    click(page, "snapshot")
    message = page.wait_for("document.getElementById('message').textContent", what="the snapshot's answer")
    assert message.startswith("saved "), message
    files = sorted(Path(f) for f in message[len("saved "):].split(", "))
    assert [f.name.rsplit("_", 1)[1] for f in files] == ["frame.png", "mask.png", "overlay.jpg"]
    assert all(f.parent == served.snaps for f in files)
    image, mask = cv2.imread(str(files[0])), cv2.imread(str(files[1]), cv2.IMREAD_UNCHANGED)
    assert image.shape == (540, 960, 3) and mask.shape == (540, 960) and mask.max() < 11  # CamVid's 11 classes
