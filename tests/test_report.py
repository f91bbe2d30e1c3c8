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


def test_a_conditional_runs_report_names_every_clips_class_and_shows_each_class(run_folder):
    """labels.json in a samples folder names its clips' classes (a class name is data: it
    is escaped); the report captions them and gives each class a real and a generated row."""
    fs = pafs.LocalFileSystem()
    classes = ["Kick", "Snare", "<i>Hat</i>"]
    last = run_folder / "samples" / "step_000006"
    (last / runfolder.LABELS_FILE).write_text(
        json.dumps({f"sample_{i:02d}.wav": classes[i] for i in range(3)})
    )
    (run_folder / runfolder.REAL_DIR / runfolder.LABELS_FILE).write_text(
        json.dumps({"real_00.wav": "Snare", "real_01.wav": "Kick"})
    )
    page = report.build(fs, str(run_folder))
    assert "Snare: real_00.wav" in page and "Kick: sample_00.wav" in page
    assert "<i>Hat" not in page and "&lt;i&gt;Hat&lt;/i&gt;: sample_02.wav" in page
    section = page.split("<h2 id='classes'>", 1)[1].split("<h2", 1)[0]
    rows = re.findall(r"<tr><th>([^<]*)</th>(<td.*?)</tr>", section)
    # Every class once, in the order they were first met: real clips first, then samples.
    assert [name for name, _ in rows] == ["Snare", "Kick", "&lt;i&gt;Hat&lt;/i&gt;"]
    assert [cells.count("<audio") for _, cells in rows] == [2, 2, 1]  # no real hat clip
    assert section.count("<img") == 1  # one picture of every class, drawn here


def test_the_by_class_picture_has_a_row_per_class():
    from PIL import Image

    rows = samples.class_rows(
        ["a", "b", "c"],
        real=[tone(220, 0.5, RATE), tone(330, 0.5, RATE)], real_names=["b", "a"],
        generated=[tone(440, 0.5, RATE)] * 3, names=["a", "b", "a"],
    )  # fmt: skip
    assert [(name, real is not None, fake is not None) for name, real, fake in rows] == [
        ("a", True, True), ("b", True, True)
    ]  # fmt: skip
    assert rows[0][1][100] == tone(330, 0.5, RATE)[100]  # a's real clip, not b's
    png = samples.classes_png(rows, RATE)
    assert Image.open(__import__("io").BytesIO(png)).size[1] > 1.5 * 80  # two rows of an inch


def test_a_class_name_with_dollar_signs_is_drawn_as_text():
    """matplotlib reads $...$ as TeX, and a class name is data: a_$x^$ must not fail a run."""
    clip = tone(220, 0.25, RATE)
    names = ["a_$x^$", "$\\foo$ bar"]
    png = samples.clips_png(np.stack([clip, clip]), RATE, clip[None], names=names,
                            real_names=["$$"])  # fmt: skip
    assert png.startswith(b"\x89PNG")
    rows = samples.class_rows(names, [clip], ["a_$x^$"], [clip, clip], names)
    assert samples.classes_png(rows, RATE).startswith(b"\x89PNG")
