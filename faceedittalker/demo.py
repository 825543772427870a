"""Web demo: a portrait, a speech file and attribute edits in, the talking-head video out, in the browser.

    python scripts/demo.py [model=DIR] [port=7860] [host=127.0.0.1] [share=false]
    faceedittalker-demo [same keys]                 (the console entry point of `pip install .`)

A Gradio Blocks app around one `FaceEditTalkerPipeline`, loaded once at start (the bundled demo model when no
`model=` is given). Every request runs the same code and the same input checks as `scripts/infer.py`: a bad
upload or a bad value is the pipeline's `InputError`, shown as one line in the page (no traceback; the app keeps
serving). Requests wait in one queue with `concurrency` (default 1) running at a time per model, since the
model's weights and the device are shared.

Choices the issue leaves open (written down here):
- The portrait input is a `gr.Image` that hands the uploaded file on unopened (`portrait_input`): Gradio's own
  image preprocessing would fail on a broken file with a generic message before our checks could name it.
- The attribute sliders exist for every attribute of the library and are shown when the attribute is chosen,
  so the API endpoint has a fixed signature per model: portrait, speech, chosen names, ramp on/from/to,
  steps, seed, landmark video, edit guidance, edit region, kept names, then one alpha per library attribute in
  the library's order.
- Edit guidance and the edit region (beyond the paper) start at the model folder's own defaults
  (`model_index.json`), as `scripts/infer.py` without those keys; `keep` starts empty (the paper's edit).
- Generated videos are written to a temporary folder of the app, removed when the app exits; Gradio serves
  copies from its cache, which it clears of files older than an hour.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import hydra
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR, DEMO_MODEL, DEMO_PORTRAIT, DEMO_SPEECH
from faceedittalker.cli.options import resolve_device
from faceedittalker.errors import InputError, exit_on_input_error, find_input_error

log = logging.getLogger(__name__)

DEFAULT_ALPHA = 0.5
ALPHA_STEP = 0.05
CACHE_SECONDS = 3600  # Gradio's copies of inputs and outputs are deleted after this long


def portrait_input(**kwargs: Any) -> gr.Image:
    """A `gr.Image` upload (type filepath) that hands the uploaded file's path on without opening it, so a broken
    or mislabelled file reaches the pipeline's checks and gets their one-line message (Gradio's own preprocessing
    opens it with PIL and fails with a generic one). Set on the instance: a subclass of a Gradio component makes
    Gradio write a `.pyi` stub beside this module at import time."""
    image = gr.Image(type="filepath", **kwargs)
    preprocess = image.preprocess

    def pass_path_on(payload: Any) -> str | None:
        if payload is None:
            return None
        if payload.path:
            return str(payload.path)
        return preprocess(payload)  # pasted images arrive as data URLs

    image.preprocess = pass_path_on
    return image


@dataclass(frozen=True)
class DemoRequest:
    """One Generate click, as the pipeline takes it."""

    portrait: str
    speech: str
    edits: dict[str, float]
    ramp: tuple[float, float] | None
    steps: int | None
    seed: int
    save_landmarks: bool
    edit_guidance: float
    edit_region: bool
    edit_reference: bool
    keep: tuple[str, ...]


def parse_request(
    portrait: str | None,
    speech: str | None,
    chosen: Sequence[str] | None,
    alphas: dict[str, float],
    ramp_on: bool,
    ramp_from: float | None,
    ramp_to: float | None,
    steps: float | None,
    seed: float | None,
    save_landmarks: bool,
    edit_guidance: float | None,
    edit_region: bool,
    edit_reference: bool,
    keep: Sequence[str] | None,
) -> DemoRequest:
    """The widgets' values -> a `DemoRequest`; what only the page can get wrong (nothing uploaded, a number box
    left empty or not whole) is an `InputError` here; everything else is checked by the pipeline, as for the CLI."""
    if not portrait:
        raise InputError("upload a portrait first")
    if not speech:
        raise InputError("upload or record a speech file first")
    edits = {}
    for name in chosen or []:
        if name not in alphas:
            raise InputError(f"unknown attribute '{name}'; choose from: {', '.join(alphas)}")
        edits[name] = alphas[name]
    ramp = None
    if ramp_on:
        if ramp_from is None or ramp_to is None:
            raise InputError("give the ramp's start and end in seconds")
        ramp = (float(ramp_from), float(ramp_to))
    if edit_guidance is None or edit_guidance == "":
        raise InputError("edit guidance is empty; give a number (0: the paper's edit)")
    return DemoRequest(portrait=str(portrait), speech=str(speech), edits=edits, ramp=ramp,
                       steps=whole_number("steps", steps, allow_none=True), seed=whole_number("seed", seed),
                       save_landmarks=bool(save_landmarks), edit_guidance=float(edit_guidance),
                       edit_region=bool(edit_region), edit_reference=bool(edit_reference),
                       keep=tuple(keep or ()))  # fmt: skip


def whole_number(name: str, value: float | None, allow_none: bool = False) -> int | None:
    """A number box's value as an int: empty is None where allowed; not whole or not finite is an `InputError`."""
    if value is None or value == "":
        if allow_none:
            return None
        raise InputError(f"{name} is empty; give a whole number")
    number = float(value)
    if not math.isfinite(number) or number != int(number):
        raise InputError(f"{name}={value} is not a whole number")
    return int(number)


class DemoApp:
    """The page and its one handler around a loaded pipeline. `build()` returns the Blocks (queue set)."""

    def __init__(self, pipeline: Any, concurrency: int = 1, precision: str = "fp32",
                 output_dir: str | Path | None = None):  # fmt: skip
        self.pipeline = pipeline
        self.precision = precision
        self.attribute_names = attribute_names(pipeline)
        self.concurrency = concurrency
        if output_dir is None:
            output_dir = tempfile.mkdtemp(prefix="faceedittalker-demo-")
            atexit.register(shutil.rmtree, output_dir, ignore_errors=True)
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)

    # ----- the handler ---------------------------------------------------------------------------------------
    def generate(self, portrait, speech, chosen, ramp_on, ramp_from, ramp_to, steps, seed, save_landmarks,
                 edit_guidance, edit_region, edit_reference, keep, *alphas,
                 progress=gr.Progress(track_tqdm=True)):  # fmt: skip
        """Generate click -> (video, landmark video). Bad input: `gr.Error` with the `InputError`'s message."""
        try:
            request = parse_request(portrait, speech, chosen, dict(zip(self.attribute_names, alphas, strict=True)),
                                    ramp_on, ramp_from, ramp_to, steps, seed, save_landmarks, edit_guidance,
                                    edit_region, edit_reference, keep)  # fmt: skip
            output = self.output_dir / f"{Path(request.portrait).stem}_{uuid.uuid4().hex[:8]}.mp4"
            video, landmarks = run_pipeline(self.pipeline, request, output, self.precision, progress)
        except Exception as err:
            cause = find_input_error(err)
            if cause is None:  # a bug, not the user's input: the traceback goes to the server log
                log.exception("generation failed")
                raise gr.Error(f"generation failed: {one_line(err)}", print_exception=False) from err
            message = one_line(cause)
            for upload in (portrait, speech):  # Gradio's upload folder says nothing to the user: the file name does
                if upload:
                    message = message.replace(str(Path(upload).parent) + os.sep, "")
            raise gr.Error(message, title="Bad input", print_exception=False) from None
        return str(video), (str(landmarks) if landmarks is not None else None)

    # ----- the page ------------------------------------------------------------------------------------------
    def build(self, max_queue: int | None = None) -> gr.Blocks:
        names = self.attribute_names
        with gr.Blocks(title="FaceEditTalker", delete_cache=(CACHE_SECONDS, CACHE_SECONDS)) as demo:
            gr.Markdown("# FaceEditTalker\nA portrait and a speech file in, the portrait talking out, with its "
                        "facial attributes edited (Alg. 4).")  # fmt: skip
            with gr.Row():
                with gr.Column():
                    portrait = portrait_input(label="Portrait", sources=["upload", "clipboard"], elem_id="portrait")
                    speech = gr.Audio(label="Speech", sources=["upload", "microphone"], type="filepath",
                                      elem_id="speech")  # fmt: skip
                    if names:
                        chosen = gr.Dropdown(names, value=[], multiselect=True, label="Edits",
                                             info="attributes of the model's library; one alpha slider each",
                                             elem_id="edits")  # fmt: skip
                    else:
                        gr.Markdown("*This model has no attribute library: videos are made without edits.*")
                        chosen = gr.State([])
                    sliders = [gr.Slider(-1.0, 1.0, value=DEFAULT_ALPHA, step=ALPHA_STEP, label=f"alpha {name}",
                                         info="negative removes the attribute", visible=False,
                                         elem_id=f"alpha-{name}") for name in names]  # fmt: skip
                    with gr.Row():
                        ramp_on = gr.Checkbox(False, label="Ramp the edits in", elem_id="ramp",
                                              info="strength rises linearly from 0 to alpha")  # fmt: skip
                        ramp_from = gr.Number(0.0, label="ramp from (s)", minimum=0)
                        ramp_to = gr.Number(2.0, label="ramp to (s)", minimum=0)
                    with gr.Accordion("Advanced", open=False):
                        steps = gr.Number(default_steps(self.pipeline), precision=0, minimum=1,
                                          label="DDIM steps (empty: the model's own)", elem_id="steps")  # fmt: skip
                        seed = gr.Number(0, precision=0, label="seed", elem_id="seed")
                        save_landmarks = gr.Checkbox(False, label="Show the landmark video beside it",
                                                     elem_id="landmarks")  # fmt: skip
                        edit_guidance = gr.Number(float(self.pipeline.edit_guidance), minimum=0,
                                                  label="edit guidance (0: the paper's edit)",
                                                  elem_id="edit-guidance")  # fmt: skip
                        edit_region = gr.Checkbox(bool(self.pipeline.edit_region),
                                                  label="Confine each edit to its attribute's face region",
                                                  elem_id="edit-region")  # fmt: skip
                        edit_reference = gr.Checkbox(bool(self.pipeline.edit_reference),
                                                     label="Animate the edited portrait (edits without a ramp)",
                                                     elem_id="edit-reference")  # fmt: skip
                        keep = (gr.Dropdown(names, value=[], multiselect=True, label="Keep",
                                            info="attributes the edits must not move", elem_id="keep")
                                if names else gr.State([]))  # fmt: skip
                    button = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column():
                    video = gr.Video(label="Talking head", format=None, buttons=["download"], interactive=False,
                                     elem_id="video")  # fmt: skip
                    landmark_video = gr.Video(label="Landmarks | video", format=None, buttons=["download"],
                                              interactive=False, visible=False, elem_id="landmark-video")  # fmt: skip
            gr.Examples([[str(DEMO_PORTRAIT), str(DEMO_SPEECH)]], inputs=[portrait, speech], label="Examples")
            save_landmarks.change(lambda shown: gr.update(visible=bool(shown)), save_landmarks, landmark_video,
                                  queue=False, api_visibility="private")  # fmt: skip
            if names:
                chosen.change(lambda picked: [gr.update(visible=name in (picked or [])) for name in names],
                              chosen, sliders, queue=False, api_visibility="private")  # fmt: skip
            button.click(self.generate,
                         [portrait, speech, chosen, ramp_on, ramp_from, ramp_to, steps, seed, save_landmarks,
                          edit_guidance, edit_region, edit_reference, keep, *sliders],
                         [video, landmark_video], api_name="generate", concurrency_limit=self.concurrency,
                         concurrency_id="model")  # fmt: skip
        demo.queue(default_concurrency_limit=self.concurrency, max_size=max_queue)
        return demo


def attribute_names(pipeline: Any) -> list[str]:
    """The loaded model's attribute library (custom attributes included); [] when the model has none."""
    return list(pipeline.attribute_names)


def default_steps(pipeline: Any) -> int | None:
    """The DDIM steps the model was saved with (shown in the page), or None (the pipeline's default)."""
    steps = pipeline.video_model.sample_steps
    return int(steps) if steps else None


def run_pipeline(pipeline: Any, request: DemoRequest, output: Path, precision: str = "fp32",
                 progress: gr.Progress | None = None) -> tuple[Path, Path | None]:
    """One request through the pipeline -> (video, landmark video or None). The pipeline's tqdm bars (inversion,
    denoising steps, decoding) reach the page's progress bar through `gr.Progress(track_tqdm=True)`."""
    if progress is not None:
        progress(0, desc="finding the face, reading the speech")
    landmarks = output.with_name(f"{output.stem}_landmarks.mp4") if request.save_landmarks else None
    names = list(request.edits)
    result = pipeline(request.portrait, request.speech, edit=names or None,
                      alpha=[request.edits[name] for name in names] or None, ramp=request.ramp, output=output,
                      steps=request.steps, seed=request.seed, precision=precision, landmarks_output=landmarks,
                      progress=True, edit_guidance=request.edit_guidance, edit_region=request.edit_region,
                      edit_reference=request.edit_reference and request.ramp is None,  # a ramp starts unedited
                      keep=list(request.keep) or None)  # fmt: skip
    return Path(result.path), (Path(result.landmarks_path) if result.landmarks_path is not None else None)


def one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_pipeline(model: str | Path | None = None, device: str | None = None) -> Any:
    """The model folder (the bundled demo model when None) as a pipeline on `device` (cuda when there is one)."""

    from faceedittalker.pipeline import FaceEditTalkerPipeline

    device = resolve_device(device)
    return FaceEditTalkerPipeline.from_pretrained(Path(model).expanduser() if model else DEMO_MODEL, device=device)


@hydra.main(config_path=str(CONFIGS_DIR), config_name="demo", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    """`scripts/demo.py` and `faceedittalker-demo`: load the model once, serve the page until interrupted."""
    pipeline = load_pipeline(cfg.model, cfg.device)
    demo = DemoApp(pipeline, concurrency=cfg.concurrency, precision=cfg.precision).build(max_queue=cfg.max_queue)
    print(f"model {cfg.model or DEMO_MODEL} on {pipeline.device}; attributes: "
          f"{', '.join(pipeline.attribute_names) or 'none'}")  # fmt: skip
    demo.launch(server_name=cfg.host, server_port=cfg.port, share=cfg.share)
