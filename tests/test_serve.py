"""`audiogan serve`: the HTTP API answered without a server, then on Ray Serve over HTTP, and
the sound explorer's page in headless chromium, a pad clicked through the DevTools protocol.
Everything listens on 127.0.0.1 only."""

from __future__ import annotations

import io
import json
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf
from conftest import die_with_parent, free_port
from test_api import _run_folder
from test_report import CHROMIUM_FLAGS, _chromium

from audiogan import serve

RATE, CLIP = 16000, 4096  # the tiny checkpoint's clips: 0.256 s


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return _run_folder(tmp_path_factory.mktemp("serve"), "wavegan", True)  # kick, snare


@pytest.fixture(scope="module")
def explorer(checkpoint) -> serve.SoundExplorer:
    return serve.SoundExplorer(checkpoint)


def _wav(body: bytes) -> tuple:
    audio, rate = sf.read(io.BytesIO(body), dtype="float32")
    return audio, rate


def test_generate_answers_n_clips_of_a_class_as_one_wav(explorer):
    status, kind, body = explorer.answer("/generate", {"label": "snare", "seed": "3", "n": "2"})
    audio, rate = _wav(body)
    assert (status, kind, rate, audio.shape) == (200, "audio/wav", RATE, (2 * CLIP,))
    assert explorer.answer("/generate", {"label": "snare", "seed": "3", "n": "2"})[2] == body
    assert explorer.answer("/generate", {"label": "kick", "seed": "3", "n": "2"})[2] != body


def test_interpolate_answers_the_row_or_one_clip_of_it(explorer):
    query = {"seed_a": "1", "seed_b": "2", "steps": "4", "label": "kick"}
    row, _ = _wav(explorer.answer("/interpolate", query)[2])
    last, _ = _wav(explorer.answer("/interpolate", {**query, "at": "3"})[2])
    seed_b, _ = _wav(explorer.answer("/generate", {"label": "kick", "seed": "2"})[2])
    assert row.shape == (4 * CLIP,) and last.shape == (CLIP,)
    assert (last == row[3 * CLIP :]).all() and abs(last - seed_b).max() <= 2 / 32768


@pytest.mark.parametrize(
    ("path", "query", "message"),
    [
        ("/generate", {"label": "hats"}, "label 'hats' is not one of the model's: kick, snare"),
        ("/generate", {"label": "kick", "seed": "-1"}, "seed must be a whole number from 0"),
        ("/generate", {"label": "kick", "seed": "1e3"}, "got '1e3'"),
        ("/generate", {"label": "kick", "seed": str(2**63)}, "seed must be from 0 to"),
        ("/generate", {"label": "kick", "n": "17"}, "n must be from 1 to 16, got 17"),
        ("/interpolate", {"seed_a": "1", "label": "kick"}, "seed_b is required"),
        ("/interpolate", {"seed_a": "1", "seed_b": "2"}, "this model is conditional"),
        ("/interpolate", {"seed_a": "1", "seed_b": "2", "label": "kick", "steps": "4", "at": "4"},
         "at must be from 0 to 3, got 4"),
    ],
)  # fmt: skip
def test_a_request_it_cannot_answer_is_a_400_that_says_why(explorer, path, query, message):
    status, kind, body = explorer.answer(path, query)
    assert status == 400 and kind.startswith("text/plain")
    assert message in body.decode()


def test_info_names_the_labels_and_the_page_has_its_pads(explorer):
    status, _, body = explorer.answer("/info", {})
    assert status == 200
    assert json.loads(body) == {"labels": ["kick", "snare"], "sample_rate_hz": RATE,
                                "clip_seconds": 0.256, "step": 3, "max_clips": 16}  # fmt: skip
    status, kind, page = explorer.answer("/", {})
    assert status == 200 and kind.startswith("text/html") and b"pad.className = 'pad'" in page
    assert explorer.answer("/nothing", {})[0] == 404


@pytest.fixture(scope="module")
def served(ray_session, checkpoint) -> str:
    """The explorer on Ray Serve in the test session's Ray, its HTTP proxy on 127.0.0.1."""
    from ray import serve as ray_serve

    url = serve.start(checkpoint, "127.0.0.1", free_port(), cpus_per_replica=0.25)
    yield url
    ray_serve.shutdown()


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


@pytest.mark.ray
def test_over_http_a_client_gets_wavs_and_clear_4xx(served):
    status, kind, body = _get(f"{served}generate?label=snare&seed=7&n=3")
    audio, rate = _wav(body)
    assert (status, kind, rate, audio.shape) == (200, "audio/wav", RATE, (3 * CLIP,))
    status, _, body = _get(f"{served}generate?label=hats&seed=7")
    assert status == 400 and b"not one of the model's: kick, snare" in body
    status, _, body = _get(f"{served}generate?label=kick&seed=seven")
    assert status == 400 and b"seed must be a whole number" in body
    status, _, body = _get(f"{served}interpolate?seed_a=1&seed_b=9&steps=5&label=kick")
    assert status == 200 and _wav(body)[0].shape == (5 * CLIP,)


class DevTools:
    """Headless chromium driven through the DevTools protocol (a websocket on 127.0.0.1)."""

    def __init__(self):
        import websocket

        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self.process = subprocess.Popen(
            [_chromium(), *CHROMIUM_FLAGS, "--remote-debugging-port=0",
             "--remote-debugging-address=127.0.0.1", f"--user-data-dir={self.profile}",
             "--autoplay-policy=no-user-gesture-required", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent,
        )  # fmt: skip
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.time() > deadline:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            page = next(t for t in json.load(answer) if t["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60)
        self.calls = 0

    def call(self, method: str, **params) -> dict:
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.calls:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True)  # fmt: skip
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 30):
        deadline = time.time() + seconds
        while not self.evaluate(expression):
            if time.time() > deadline:
                raise TimeoutError(expression)
            time.sleep(0.2)

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the middle of the element."""
        box = self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left",
                      clickCount=1)  # fmt: skip

    def close(self) -> None:
        self.socket.close()
        self.process.kill()
        self.process.wait(timeout=10)


# Resolves to the duration of the newest played clip once the browser has decoded its WAV.
NEWEST_DURATION = """
new Promise((done, fail) => {
  const audio = document.querySelector('#played audio');
  if (!audio) return fail('no clip was played');
  if (audio.readyState >= 1) return done(audio.duration);
  audio.addEventListener('loadedmetadata', () => done(audio.duration), {once: true});
  audio.addEventListener('error', () => fail('the clip did not decode'), {once: true});
})
"""


@pytest.mark.ray
def test_a_pad_pressed_in_the_browser_plays_a_new_clip_of_the_chosen_class(served):
    browser = DevTools()
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=served)
        browser.wait_for("document.body && document.body.dataset.ready === 'true'")
        labels = browser.evaluate(
            "[...document.querySelectorAll('#label option')].map(o => o.value)"
        )
        assert labels == ["kick", "snare"]
        browser.evaluate("document.getElementById('label').value = 'snare'")
        browser.click(".pad:nth-child(3)")
        browser.wait_for("document.querySelectorAll('#played audio').length === 1")
        assert browser.evaluate(NEWEST_DURATION) == pytest.approx(CLIP / RATE, abs=1e-3)
        url = browser.evaluate("document.querySelector('#played audio').dataset.url")
        assert "label=snare" in url and "seed=" in url
        # A second pad, then the slider between the two sounds: a clip of the row between.
        browser.click(".pad:nth-child(8)")
        browser.wait_for("document.querySelectorAll('#played audio').length === 2")
        browser.evaluate(
            "(() => { const s = document.getElementById('between'); s.value = 4;"
            " s.dispatchEvent(new Event('change')); })()"
        )
        browser.wait_for("document.querySelectorAll('#played audio').length === 3")
        assert browser.evaluate(NEWEST_DURATION) == pytest.approx(CLIP / RATE, abs=1e-3)
        url = browser.evaluate("document.querySelector('#played audio').dataset.url")
        assert "/interpolate?" in url and "&at=4" in url
    finally:
        browser.close()
