"""The web demo (faceedittalker/demo.py) served on a loopback port and driven in headless Chromium."""

from __future__ import annotations

import math
import os
import shutil
import socket
import threading
from pathlib import Path

import gradio
import numpy as np
import pytest
import soundfile
from gradio_client import Client, handle_file
from helpers import run_script, run_script_main
from PIL import Image
from playwright.sync_api import sync_playwright

from faceedittalker import DEMO_PORTRAIT, DEMO_SPEECH, REPO_ROOT
from faceedittalker.data.audio import SAMPLE_RATE, load_audio
from faceedittalker.data.video import read_video
from faceedittalker.demo import DemoApp, load_pipeline, parse_request, run_pipeline
from faceedittalker.testing import TINY_ATTRIBUTES, build_random_model

# Debian's chromium (Playwright's own browser download is not used); `.ci/run` installs it.
CHROMIUM = os.environ.get("FACEEDITTALKER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# The README's picture of the page: FACEEDITTALKER_UPDATE_SCREENSHOT=1 pytest tests/test_demo.py -k browser
SCREENSHOT = REPO_ROOT / "docs" / "images" / "demo.png"
TIMEOUT_MS = 120_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_random_model(tmp_path_factory.mktemp("demo") / "model")


class CountingPipeline:
    """The real pipeline, counting how many calls run at the same time (the queue must allow one)."""

    def __init__(self, pipeline):
        self.pipeline, self.running, self.most_at_once, self.calls = pipeline, 0, 0, 0
        self.lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.pipeline, name)

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.running += 1
            self.calls += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            return self.pipeline(*args, **kwargs)
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture(scope="module")
def demo_pipeline(tiny_model) -> CountingPipeline:
    return CountingPipeline(load_pipeline(tiny_model, "cpu"))


@pytest.fixture(scope="module")
def demo_url(demo_pipeline, tmp_path_factory):
    """The app on a free loopback port, in this process, with the tiny random model loaded once."""
    demo = DemoApp(demo_pipeline, output_dir=tmp_path_factory.mktemp("demo_outputs")).build()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium, or set FACEEDITTALKER_CHROMIUM)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


def generate_and_wait(page, previous_src: str | None = None) -> float:
    """Click Generate and wait for a (new) video to be loaded in the page; returns its duration in seconds."""
    page.locator("#generate").click()
    page.wait_for_function(
        """previous => { const v = document.querySelector('#video video');
                         return v && v.src && v.src !== previous && v.readyState >= 1 && isFinite(v.duration); }""",
        arg=previous_src or "", timeout=TIMEOUT_MS)  # fmt: skip
    return page.locator("#video video").evaluate("v => v.duration")


def test_demo_in_browser(demo_url, browser, tmp_path):
    speech_seconds = len(load_audio(DEMO_SPEECH)) / SAMPLE_RATE
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(demo_url)
    page.locator("#portrait input[type=file]").set_input_files(str(DEMO_PORTRAIT))
    page.locator("#speech input[type=file]").set_input_files(str(DEMO_SPEECH))
    page.locator("#edits input").click()
    page.get_by_role("option", name="Eyeglasses", exact=True).click()
    alpha = page.locator("#alpha-Eyeglasses input[type=number]")
    alpha.fill("0.8")
    alpha.press("Enter")

    duration = generate_and_wait(page)
    assert duration == pytest.approx(speech_seconds, abs=0.1)
    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    with Image.open(shot) as picture:
        assert picture.width == 1280 and picture.height >= 900
        if os.environ.get("FACEEDITTALKER_UPDATE_SCREENSHOT"):  # the README's picture (256 colours: a third the size)
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            picture.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(SCREENSHOT, optimize=True)

    # A text file named .png: one line naming the problem, in the page.
    fake = tmp_path / "not_an_image.png"
    fake.write_text("this is text, not a picture\n")
    page.locator("#portrait button[aria-label='Remove Image']").first.click()
    page.locator("#portrait input[type=file]").set_input_files(str(fake))
    first_src = page.locator("#video video").get_attribute("src")
    page.locator("#generate").click()
    toast = page.locator(".toast-body", has_text="not_an_image.png")
    toast.wait_for(timeout=TIMEOUT_MS)
    text = toast.inner_text()
    assert "Traceback" not in text
    assert len([line for line in text.splitlines() if "not_an_image.png" in line]) == 1  # one line names it
    assert "/tmp" not in text  # the file's name, not Gradio's upload folder

    # The app survived: the real portrait again, a new video.
    page.locator("#portrait button[aria-label='Remove Image']").first.click()
    page.locator("#portrait input[type=file]").set_input_files(str(DEMO_PORTRAIT))
    assert generate_and_wait(page, first_src) == pytest.approx(speech_seconds, abs=0.1)




def test_client_matches_cli(demo_url, demo_pipeline, tiny_model, tmp_path, monkeypatch):
    """gradio_client against the running app and scripts/infer.py: same frame count, same soundtrack. Two requests
    sent at once both come back, one after the other (the queue runs one at a time per model)."""
    speech = tmp_path / "speech.wav"  # the first 1.5 s of the committed speech: the comparison needs no more
    soundfile.write(speech, load_audio(DEMO_SPEECH)[: int(1.5 * SAMPLE_RATE)], SAMPLE_RATE)
    client = Client(demo_url, verbose=False)
    alphas = [0.8 if name == "Eyeglasses" else 0.0 for name in TINY_ATTRIBUTES]
    inputs = (handle_file(str(DEMO_PORTRAIT)), handle_file(str(speech)), ["Eyeglasses"], False, 0, 2, 2, 3)
    calls_before = demo_pipeline.calls
    advanced = (0.0, False, False, [])  # guidance, region, edited reference, kept: the tiny model's own defaults
    with_landmarks = client.submit(*inputs, True, *advanced, *alphas, api_name="/generate")
    video, landmarks = client.submit(*inputs, False, *advanced, *alphas,
                                     api_name="/generate").result(timeout=TIMEOUT_MS / 1000)  # fmt: skip
    side_video, side_landmarks = with_landmarks.result(timeout=TIMEOUT_MS / 1000)
    assert demo_pipeline.calls - calls_before == 2
    assert demo_pipeline.most_at_once == 1
    served = Path(video["video"] if isinstance(video, dict) else video)
    assert landmarks is None
    side = Path(side_landmarks["video"] if isinstance(side_landmarks, dict) else side_landmarks)
    side_frames = read_video(side)[0]

    cli_output = tmp_path / "cli.mp4"
    assert run_script_main(monkeypatch, "infer.py", f"ref={DEMO_PORTRAIT}", f"audio={speech}", f"model={tiny_model}",
                           "edit=Eyeglasses", "alpha=0.8", "steps=2", "seed=3", "device=cpu", "save_landmarks=false",
                     f"output={cli_output}") == 0  # fmt: skip

    frames, fps, audio, _ = read_video(served)
    cli_frames, cli_fps, cli_audio, _ = read_video(cli_output)
    assert len(frames) == len(cli_frames) == math.ceil(1.5 * 25)
    assert fps == cli_fps == 25
    assert frames.shape == cli_frames.shape
    # the landmark video: the frames with the landmark images on their right (square, as high as a frame)
    assert side_frames.shape == (len(frames), frames.shape[1], frames.shape[2] + frames.shape[1], 3)
    assert np.abs(frames.astype(float) - cli_frames.astype(float)).mean() < 1.0  # the same video (codec noise)
    assert len(audio) == len(cli_audio)
    np.testing.assert_allclose(audio, cli_audio, atol=1e-4)


def test_handler_turns_bad_input_into_one_line(demo_pipeline, tmp_path):
    """Without a browser: each page-level mistake and a pipeline check come back as one `gr.Error` line."""
    app = DemoApp(demo_pipeline, output_dir=tmp_path)
    alphas = [0.5] * len(TINY_ATTRIBUTES)
    portrait, speech = str(DEMO_PORTRAIT), str(DEMO_SPEECH)
    text = tmp_path / "upload" / "notes.png"
    text.parent.mkdir()
    text.write_text("not a picture")
    plain = (0.0, False, False, [])  # edit guidance, edit region, edited reference, kept attributes
    cases = [
        ((None, speech, [], False, 0, 2, 2, 0, False, *plain), "upload a portrait first"),
        ((portrait, None, [], False, 0, 2, 2, 0, False, *plain), "upload or record a speech file first"),
        ((portrait, speech, [], False, 0, 2, 2.5, 0, False, *plain), "steps=2.5 is not a whole number"),
        ((portrait, speech, [], False, 0, 2, 2, None, False, *plain), "seed is empty"),
        ((portrait, speech, ["Eyeglasses"], True, 2, 1, 2, 0, False, *plain), "ramp must be [start, end]"),
        ((str(text), speech, [], False, 0, 2, 2, 0, False, *plain), "notes.png"),
        ((portrait, speech, ["Eyeglasses"], False, 0, 2, 2, 0, False, None, False, False, []),
         "edit guidance is empty"),
        ((portrait, speech, ["Eyeglasses"], False, 0, 2, 2, 0, False, -1.0, False, False, []), "edit_guidance must be"),
        ((portrait, speech, ["Smiling"], False, 0, 2, 2, 0, False, 0.0, False, False, ["Smiling"]),
         "Smiling cannot be both edited and kept"),
    ]
    for args, expected in cases:
        with pytest.raises(gradio.Error) as caught:
            app.generate(*args, *alphas, progress=None)
        message = caught.value.message
        assert expected in message and "\n" not in message and str(text.parent) not in message
    assert not any(tmp_path.glob("*.mp4"))  # nothing half-written


def test_the_advanced_edit_options_reach_the_pipeline(tmp_path):
    """The page's edit guidance, region, edited reference and kept attributes are passed on as the CLI's keys are."""
    class Recording:
        def __call__(self, portrait, speech, **kwargs):
            self.kwargs = kwargs
            return type("Result", (), {"path": kwargs["output"], "landmarks_path": None})()

    request = parse_request("p.png", "s.wav", ["Blond_Hair"], {"Blond_Hair": 0.4, "Male": 0.5}, False, 0, 2, None, 0,
                            False, 1.5, True, True, ["Male", "Young"])  # fmt: skip
    pipeline = Recording()
    run_pipeline(pipeline, request, tmp_path / "out.mp4")
    assert pipeline.kwargs["edit"] == ["Blond_Hair"] and pipeline.kwargs["alpha"] == [0.4]
    assert pipeline.kwargs["edit_guidance"] == 1.5 and pipeline.kwargs["edit_region"] is True
    assert pipeline.kwargs["edit_reference"] is True and pipeline.kwargs["keep"] == ["Male", "Young"]
    ramped = parse_request("p.png", "s.wav", ["Blond_Hair"], {"Blond_Hair": 0.4}, True, 0, 2, None, 0, False, 1.5, True,
                           True, [])  # fmt: skip
    run_pipeline(pipeline, ramped, tmp_path / "out.mp4")  # a ramp starts unedited: its video is not anchored
    assert pipeline.kwargs["ramp"] == (0.0, 2.0) and pipeline.kwargs["edit_reference"] is False
    plain = parse_request("p.png", "s.wav", [], {}, False, 0, 2, None, 0, False, 0, False, False, [])
    run_pipeline(pipeline, plain, tmp_path / "out.mp4")
    assert pipeline.kwargs["edit"] is None and pipeline.kwargs["keep"] is None


@pytest.mark.slow  # a fresh interpreter importing torch, gradio and MediaPipe: ~10 s alone, minutes on a busy CPU
def test_demo_script_refuses_a_missing_model(tmp_path):
    result = run_script("demo.py", f"model={tmp_path / 'no_such_model'}", "port=0", timeout=600)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "no_such_model" in result.stderr
    assert "Traceback" not in result.stderr
