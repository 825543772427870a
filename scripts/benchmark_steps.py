"""Quality against steps and samplers: PSNR of N-step frames to a many-step render of the same request, the
reference's round trip (invert, decode, compare with the crop), and the denoiser's frame-evaluations per frame
(steps x window overlap). Chooses a model's default sampler and `sample_steps`.

    python scripts/benchmark_steps.py [model=DIR] steps=[5,7,10,20,50] reference_steps=100

Each entry of `samplers` (solver, timestep spacing, inversion steps) is run at every step count. The reference is
the ODE solved finely from T-1: "trailing" DDIM with `reference_steps` for inversion and sampling alike. The
inversion depends only on the spacing and its steps, so it is computed once per pair.

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
from faceedittalker.diffusion import DDIM
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
    portrait = Path(cfg.ref or DEMO_PORTRAIT)
    schedule = model.ddim.config_dict()
    _, crop, x_ref = pipe.prepare_portrait(portrait)
    own_landmarks = pipe.landmark_image(crop.landmarks)
    encode_reference, inverted = model.encode_reference, {}

    def configure(solver: str, spacing: str, invert_steps: int, order: int = 2) -> None:
        model.ddim = DDIM(**{**schedule, "solver": solver, "timestep_spacing": spacing, "solver_order": order})
        model.invert_steps = invert_steps

    def cached_reference(image, landmark_image, z_sem=None):  # (spacing, inversion steps) -> (z_sem, Z_T)
        key = (model.ddim.config.timestep_spacing, model.invert_steps, z_sem is None)
        if key not in inverted:
            inverted[key] = encode_reference(image, landmark_image, z_sem)
        return inverted[key]

    model.encode_reference = cached_reference

    def render(n: int) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        result = pipe(portrait, waveform, edit=plain(cfg.edit), alpha=plain(cfg.alpha), steps=n, paste_back=False,
                      progress=False)  # fmt: skip
        return as_tensor(result.frames), time.perf_counter() - start

    def round_trip(n: int) -> float:
        """The reference inverted and decoded back, against the crop itself: what the model reproduces at all."""
        z_sem, z_T = model.encode_reference(x_ref, own_landmarks)
        face = pipe.decode_still(z_T, z_sem, own_landmarks, steps=n)
        return float(psnr(as_tensor(face[None]), x_ref.cpu())[0])

    reference_steps = int(cfg.reference_steps)
    configure("ddim", "trailing", reference_steps)
    reference, _ = render(reference_steps)
    reference_round_trip = round(round_trip(reference_steps), 2)
    num_frames = len(reference)
    rows = []
    for sampler in cfg.samplers:
        for n in steps:
            configure(sampler.solver, sampler.timestep_spacing, int(sampler.invert_steps or n),
                      int(sampler.get("solver_order") or 2))
            frames, seconds = render(n)
            per_frame = psnr(frames, reference)  # (T,) dB
            rows.append({"solver": sampler.solver, "solver_order": model.ddim.config.solver_order,
                         "timestep_spacing": sampler.timestep_spacing, "steps": n,
                         "invert_steps": model.invert_steps,
                         "evaluations_per_frame": round(model.evaluations_per_frame(num_frames, n), 2),
                         "long_video_evaluations_per_frame": round(model.evaluations_per_frame(10_000, n), 2),
                         "psnr_to_reference_db": round(float(per_frame.mean()), 2),
                         "min_frame_psnr_db": round(float(per_frame.min()), 2),
                         "round_trip_psnr_db": round(round_trip(n), 2), "seconds": round(seconds, 1)})  # fmt: skip
    report = {"model": str(cfg.model or DEMO_MODEL), "num_frames": num_frames,
              "reference_round_trip_psnr_db": reference_round_trip,
              "reference_steps": int(cfg.reference_steps), "threads": torch.get_num_threads(), "rows": rows}
    write_json_atomic(cfg.output, report)
    print(f"{num_frames} frames, PSNR to the {reference_steps}-step render (face crops):\n")
    print("| solver | spacing | steps | inversion steps | evaluations / frame (long videos) | PSNR to the reference "
          "render (dB) | worst frame (dB) | reference round trip (dB) | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['solver']} ({r['solver_order']}) | {r['timestep_spacing']} | {r['steps']} | {r['invert_steps']} "
              f"| {r['evaluations_per_frame']} ({r['long_video_evaluations_per_frame']}) "
              f"| {r['psnr_to_reference_db']} | {r['min_frame_psnr_db']} | {r['round_trip_psnr_db']} "
              f"| {r['seconds']} |")
    print(f"| ddim (reference) | trailing | {reference_steps} | {reference_steps} | | | | {reference_round_trip} | |")
    print(f"\nwrote {cfg.output}")
    return report


if __name__ == "__main__":
    main()
