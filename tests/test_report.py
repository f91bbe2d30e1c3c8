"""report.html in a real headless browser: it must render its images and audio players."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pyarrow.fs as pafs
import pytest
from conftest import tone

from audiogan import report, runfolder, samples

RATE = 16000
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]
# Appended to a copy of the report (the report itself has no script): once the page has
# loaded, it counts decoded images and audio elements whose WAV the browser could decode.
PROBE = """
<script>
window.addEventListener('load', async () => {
  const images = [...document.images];
  const audios = [...document.querySelectorAll('audio')];
  const decoded = await Promise.all(audios.map(a => new Promise(done => {
    a.addEventListener('loadedmetadata', () => done(a.duration), {once: true});
    a.addEventListener('error', () => done(-1), {once: true});
    a.load();
  })));
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({
    images: images.length,
    images_decoded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    audios: audios.length,
    audio_seconds: decoded,
  });
  document.body.appendChild(out);
});
</script>
"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("no chromium in CI: .ci/run installs Debian's chromium")
    pytest.skip("no chromium here (apt-get install chromium; .ci/run installs it)")


@pytest.fixture
def run_folder(tmp_path):
    """A run folder as training leaves it: metrics, two sample steps and real clips."""
    run = tmp_path / "runs" / "browser"
    rows = [
        {"step": s, "d_loss": -s / 10, "g_loss": s / 20, "gp": 0.1, "samples_per_s": 100.0}
        | ({"mel_fd": 50.0 / s} if s % 2 == 0 else {})
        for s in range(1, 7)
    ]
    (run / "samples").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rng = np.random.default_rng(0)
    for step in ("step_000002", "step_000006"):
        for i in range(3):
            clip = 0.3 * rng.standard_normal(RATE).astype(np.float32)
            path = run / "samples" / step / f"sample_{i:02d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(samples.wav_bytes(clip, RATE))
    for i, hz in enumerate((220, 330)):
        path = run / runfolder.REAL_DIR / f"real_{i:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(samples.wav_bytes(tone(hz, 1.0, RATE), RATE))
    return run


def test_the_report_is_one_self_contained_file(run_folder):
    path = report.write(pafs.LocalFileSystem(), str(run_folder), {"model": "wavegan"})
    page = open(path).read()
    assert page.count("<audio") == 3 + 3 + 2  # first and latest sample steps, real clips
    assert page.count("<img") == 5  # losses, quality, two sample steps, zoom
    assert "step_000002" in page and "step_000006" in page and "wavegan" in page
    assert not re.search(r'src="(?!data:)', page)  # nothing fetched from anywhere
    assert "<script" not in page


def test_the_report_shows_the_picture_training_drew_of_a_sample_step_and_draws_a_missing_one(
    run_folder,
):
    # Rank 0 draws samples/step_XXXXXX/clips.png at every sample step; the report at every
    # checkpoint embeds it as it is instead of drawing the same clips again.
    drawn = samples.clips_png(np.zeros((3, RATE), np.float32), RATE, title="step 6")
    (run_folder / "samples/step_000006" / runfolder.SAMPLE_PNG).write_bytes(drawn)
    page = report.build(pafs.LocalFileSystem(), str(run_folder))
    embedded = [
        base64.b64decode(png) for png in re.findall(r"data:image/png;base64,([^\"]+)", page)
    ]
    assert embedded.count(drawn) == 1  # step 6, as stored
    step_2 = embedded[2]  # losses, quality, then step 2: no picture stored, so drawn here
    assert step_2 != drawn and step_2.startswith(b"\x89PNG")


def test_names_and_values_from_the_run_folder_cannot_inject_markup(run_folder):
    hostile = run_folder / "samples" / "step_1' onmouseover='alert(1)"
    hostile.mkdir()
    (hostile / "sample_00.wav").write_bytes(
        (run_folder / "samples/step_000002/sample_00.wav").read_bytes()
    )
    with open(run_folder / "metrics.jsonl", "a") as handle:
        handle.write(
            json.dumps({"step": 7, "d_loss": "<script>alert(1)</script>", "mel_fd": "<b>"}) + "\n"
        )
    page = open(report.write(pafs.LocalFileSystem(), str(run_folder))).read()
    assert "onmouseover" not in page and "<script" not in page and "<b>" not in page
    assert "&lt;script&gt;" in page  # shown as text


def test_the_report_renders_in_a_headless_browser(run_folder, tmp_path):
    chromium = _chromium()
    path = report.write(pafs.LocalFileSystem(), str(run_folder))
    probed = tmp_path / "probed.html"
    probed.write_text(open(path).read().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, "--virtual-time-budget=30000", "--dump-dom", probed.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"the page did not finish loading: {dom.stderr[-1500:]}"
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    assert probe["images"] == probe["images_decoded"] == 5
    assert probe["audios"] == 8
    assert all(seconds == pytest.approx(1.0, abs=0.01) for seconds in probe["audio_seconds"])

    screenshot = tmp_path / "report.png"
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, "--window-size=1200,3000", f"--screenshot={screenshot}",
         probed.as_uri()],
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
    )  # fmt: skip
    import matplotlib.image

    pixels = matplotlib.image.imread(str(screenshot))
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels[..., :3].std() > 0.05  # not a blank page
