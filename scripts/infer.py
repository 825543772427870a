"""Alg. 4, the main command: a portrait and speech (and attribute edits) -> a talking-head mp4 (H.264 + AAC, 25 fps).

    python scripts/infer.py ref=portrait.png audio=speech.wav edit=Eyeglasses alpha=0.8
    python scripts/infer.py ref=p.jpg audio=s.m4a edit=[Eyeglasses,Smiling] alpha=[0.8,-0.3] ramp=[0,2]
    python scripts/infer.py        # the demo: bundled model, astronaut portrait, committed speech

Keys: faceedittalker/configs/infer.yaml. The video is written under a temporary name and renamed when complete,
so a failure leaves no file behind; bad input is one `error: ...` line and exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR, DEMO_MODEL, DEMO_PORTRAIT, DEMO_SPEECH
from faceedittalker.cli.options import plain, resolve_device, resolve_precision
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.pipeline import FaceEditTalkerPipeline


@hydra.main(config_path=str(CONFIGS_DIR), config_name="infer", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> Path:
    ref = Path(cfg.ref or DEMO_PORTRAIT).expanduser()
    audio = Path(cfg.audio or DEMO_SPEECH).expanduser()
    output = Path(cfg.output or Path("outputs") / f"{ref.stem}_{audio.stem}.mp4").expanduser()
    if output.suffix.lower() != ".mp4":
        raise InputError(f"output must be an .mp4 file: {output}")
    if not ref.is_file():
        raise InputError(f"portrait not found: {ref}")
    if not audio.is_file():
        raise InputError(f"audio file not found: {audio}")
    if cfg.output is None:
        output.parent.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    pipe = FaceEditTalkerPipeline.from_pretrained(cfg.model or DEMO_MODEL, device=device, vae=cfg.vae,
                                                  audio_encoder=cfg.audio_encoder, upsample=cfg.upsample)  # fmt: skip
    if cfg.invert_steps is not None:
        pipe.set_invert_steps(cfg.invert_steps)
    landmarks = output.with_name(f"{output.stem}_landmarks.mp4") if cfg.save_landmarks else None
    result = pipe(ref, audio, edit=plain(cfg.edit), alpha=plain(cfg.alpha), ramp=plain(cfg.ramp), output=output,
                  steps=cfg.steps, seed=cfg.seed, precision=resolve_precision(cfg.precision, device),
                  paste_back=cfg.paste_back, face=cfg.face, landmarks_output=landmarks,
                  edit_guidance=cfg.edit_guidance, edit_region=cfg.edit_region, keep=plain(cfg.keep),
                  edit_guidance_interval=plain(cfg.edit_guidance_interval),
                  edit_reference=cfg.edit_reference)  # fmt: skip
    print(f"wrote {result.path} ({result.num_frames} frames, {result.duration:.2f} s)"
          + (f" and {result.landmarks_path}" if landmarks else ""))  # fmt: skip
    return result.path


if __name__ == "__main__":
    main()
