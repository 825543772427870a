"""Quality against DDIM steps: PSNR of N-step frames to a many-step render of the same request, the reference's
round trip (invert, decode, compare with the crop), and the denoiser's frame-evaluations per frame (steps x window
overlap). Chooses a model's default `sample_steps`.

    python scripts/benchmark_steps.py [model=DIR] steps=[3,5,7,10,20,50] reference_steps=100

Keys: faceedittalker/configs/benchmark_steps.yaml. Writes a JSON and prints a Markdown table.
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR, DEMO_MODEL, DEMO_PORTRAIT, DEMO_SPEECH
from faceedittalker.cli.options import plain
from faceedittalker.data.audio import SAMPLE_RATE, load_audio
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.metrics.image import psnr
from faceedittalker.pipeline import FaceEditTalkerPipeline
from faceedittalker.utils.files import write_json_atomic


def as_tensor(frames) -> torch.Tensor:
    """(T, R, R, 3) uint8 -> (T, 3, R, R) in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1


@hydra.main(config_path=str(CONFIGS_DIR), config_name="benchmark_steps", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    steps = sorted(int(s) for s in plain(cfg.steps))
    if not steps or steps[0] < 1 or int(cfg.reference_steps) <= steps[-1]:
        raise InputError(f"steps must be positive and below reference_steps={cfg.reference_steps}, got {steps}")
    pipe = FaceEditTalkerPipeline.from_pretrained(cfg.model or DEMO_MODEL)
    model = pipe.video_model
    waveform = load_audio(Path(cfg.audio or DEMO_SPEECH))[: int(cfg.seconds * SAMPLE_RATE)]
    model_invert_steps = model.invert_steps

    def render(n: int) -> tuple[torch.Tensor, float]:
        model.invert_steps = n if cfg.invert_steps == "same" else int(cfg.invert_steps or model_invert_steps)
        start = time.perf_counter()
        result = pipe(Path(cfg.ref or DEMO_PORTRAIT), waveform, edit=plain(cfg.edit), alpha=plain(cfg.alpha),
                      steps=n, paste_back=False, progress=False)  # fmt: skip
        return as_tensor(result.frames), time.perf_counter() - start

    # The reference's round trip at each step count: invert its still window, decode it back, compare with the
    # crop itself (what the model can reproduce at all, independent of the many-step render).
    _, crop, x_ref = pipe.prepare_portrait(Path(cfg.ref or DEMO_PORTRAIT))
    own_landmarks = pipe.landmark_image(crop.landmarks)

    def round_trip(n: int) -> float:
        model.invert_steps = n if cfg.invert_steps == "same" else int(cfg.invert_steps or model_invert_steps)
        z_sem, z_T = model.encode_reference(x_ref, own_landmarks)
        face = pipe.decode_still(z_T, z_sem, own_landmarks, steps=n)
        return float(psnr(as_tensor(face[None]), x_ref.cpu())[0])

    reference, _ = render(int(cfg.reference_steps))
    num_frames = len(reference)
    rows = []
    for n in steps:
        frames, seconds = render(n)
        per_frame = psnr(frames, reference)  # (T,) dB
        rows.append({"steps": n, "invert_steps": model.invert_steps,
                     "evaluations_per_frame": round(model.evaluations_per_frame(num_frames, n), 2),
                     "psnr_to_reference_db": round(float(per_frame.mean()), 2),
                     "min_frame_psnr_db": round(float(per_frame.min()), 2),
                     "round_trip_psnr_db": round(round_trip(n), 2), "seconds": round(seconds, 1)})
    reference_round_trip = round(round_trip(int(cfg.reference_steps)), 2)
    report = {"model": str(cfg.model or DEMO_MODEL), "num_frames": num_frames,
              "reference_round_trip_psnr_db": reference_round_trip,
              "reference_steps": int(cfg.reference_steps), "threads": torch.get_num_threads(), "rows": rows}
    write_json_atomic(cfg.output, report)
    print(f"{num_frames} frames, PSNR to the {cfg.reference_steps}-step render (face crops):\n")
    print("| steps | invert steps | evaluations / frame | PSNR to the reference render (dB) | worst frame (dB) "
          "| reference round trip (dB) | seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['steps']} | {r['invert_steps']} | {r['evaluations_per_frame']} | {r['psnr_to_reference_db']} "
              f"| {r['min_frame_psnr_db']} | {r['round_trip_psnr_db']} | {r['seconds']} |")
    print(f"| {cfg.reference_steps} | | | | | {reference_round_trip} | |")
    print(f"\nwrote {cfg.output}")
    return report


if __name__ == "__main__":
    main()
