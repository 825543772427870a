"""A peer's generation cost beside ours, measured in one run on this machine: seconds per generated frame.

    python scripts/benchmark_peer.py [frames=4] [json=docs/benchmarks/benchmark_peer_cpu.json]

The peer is AniPortrait's denoiser: a diffusers `UNetMotionModel` of its size (SD 1.5's UNet with AnimateDiff
motion modules, 64 x 64 latents of a 512 px frame, one CLIP image token) at AniPortrait's 25 steps with
classifier-free guidance, i.e. 50 frame-evaluations per frame (its context-window overlap, its ReferenceNet and
pose guider are left out: all in its favour). Ours is the paper configuration with random weights (video eps_theta
with E_ldm run on every window, as Alg. 4 does) at its default steps, charged the frame-evaluations per frame of a
`video_seconds` video (steps x the windows' overlap) plus its reference inversion spread over that video. Both run
random weights: the cost of a forward pass does not depend on them. Keys: faceedittalker/configs/benchmark_peer.yaml.
"""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import torch
from diffusers import UNetMotionModel
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR
from faceedittalker.benchmark import best_seconds, model_path
from faceedittalker.cli.options import resolve_device
from faceedittalker.data.video import VIDEO_FPS
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.pipeline import FaceEditTalkerPipeline
from faceedittalker.utils.files import write_json_atomic


def aniportrait_denoiser(cross_attention_dim: int) -> UNetMotionModel:
    """SD 1.5's UNet (320-640-1280-1280 channels, 2 layers per block, 8 heads) with motion modules, the size of
    AniPortrait's denoising UNet; diffusers' defaults are those of AnimateDiff on SD 1.5."""
    return UNetMotionModel(cross_attention_dim=cross_attention_dim, sample_size=64)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_ours(folder: Path, frames: int, video_frames: int, device: torch.device) -> dict:
    """One window of `frames` frames through E_ldm + the video eps_theta, as the sampler calls them."""
    model = FaceEditTalkerPipeline.from_pretrained(folder, device=device).video_model
    latent = model.resolution // model.autoencoder.downsample_factor
    channels, size = model.unet.config["in_channels"], model.landmark_image_size
    z_sem = torch.randn(1, model.unet.config["z_dim"], device=device)
    landmarks = torch.rand(1, frames, 3, size, size, device=device)
    eps = model.denoiser(z_sem, landmarks, landmarks[:, 0])
    z_t, t = torch.randn(1, frames, channels, latent, latent, device=device), torch.tensor([500], device=device)

    def forward() -> None:
        with torch.no_grad():
            eps(z_t, t)
        synchronize(device)

    print(f"ours: {frames} frames at {latent} x {latent} latents ...", flush=True)
    seconds = best_seconds(forward, 1) / frames
    evaluations = model.evaluations_per_frame(video_frames)
    inversion = model.invert_steps * model.num_frames  # once per request: a still window, inverted
    return {"parameters": sum(p.numel() for part in (model.unet, model.landmark_encoder) for p in part.parameters()),
            "seconds_per_evaluation": seconds, "evaluations_per_frame": evaluations,
            "inversion_evaluations": inversion,
            "denoising_seconds_per_frame": seconds * (evaluations + inversion / video_frames)}  # fmt: skip


def measure_peer(peer_cfg: DictConfig, frames: int, device: torch.device) -> dict:
    """The conditional and unconditional passes of guidance as one batch, as AniPortrait runs them."""
    peer = aniportrait_denoiser(int(peer_cfg.cross_attention_dim)).to(device).eval()
    passes = int(peer_cfg.guidance_passes)
    sample = torch.randn(passes, 4, frames, 64, 64, device=device)  # (B, C, F, h, w): diffusers' video layout
    tokens = torch.randn(passes, int(peer_cfg.tokens), int(peer_cfg.cross_attention_dim), device=device)

    def forward(window: torch.Tensor) -> None:
        with torch.no_grad():  # one conditioning per frame, as diffusers' AnimateDiff pipeline repeats it
            peer(window, 500, tokens.repeat_interleave(window.shape[2], dim=0))
        synchronize(device)

    print(f"peer: {passes} x {frames} frames at 64 x 64 latents ...", flush=True)
    # Warmed up on one frame: the kernels' setup without paying a whole window twice.
    seconds = best_seconds(lambda: forward(sample), 1, warmup=lambda: forward(sample[:, :, :1])) / (passes * frames)
    evaluations = int(peer_cfg.steps) * passes
    return {"model": "diffusers UNetMotionModel, AniPortrait's size",
            "parameters": sum(p.numel() for p in peer.parameters()), "seconds_per_evaluation": seconds,
            "evaluations_per_frame": evaluations, "denoising_seconds_per_frame": seconds * evaluations}  # fmt: skip


def measure_decode(device: torch.device) -> float:
    """Seconds of the SD VAE decoding one 512 px frame, which both methods pay once a frame."""
    from diffusers import AutoencoderKL

    from faceedittalker.models.autoencoder import SD_VAE_CONFIG

    vae = AutoencoderKL(**SD_VAE_CONFIG).to(device).eval()
    latents = torch.randn(1, 4, 64, 64, device=device)

    def decode() -> None:
        with torch.no_grad():
            vae.decode(latents)
        synchronize(device)

    print("the SD VAE decoding one frame ...", flush=True)
    return best_seconds(decode, 1)


@hydra.main(config_path=str(CONFIGS_DIR), config_name="benchmark_peer", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if int(cfg.frames) < 1 or float(cfg.video_seconds) <= 0:
        raise InputError(f"frames must be >= 1 and video_seconds > 0, got {cfg.frames}, {cfg.video_seconds}")
    device = torch.device(resolve_device(cfg.device))
    torch.manual_seed(0)
    name, folder = model_path("paper", Path(cfg.cache_dir))
    frames, video_frames = int(cfg.frames), math.ceil(float(cfg.video_seconds) * VIDEO_FPS)
    ours = {"model": name, **measure_ours(folder, frames, video_frames, device)}
    peer = measure_peer(cfg.peer, frames, device)
    report = {"device": str(device), "threads": torch.get_num_threads(), "frames": frames,
              "video_frames": video_frames, "ours": ours, "peer": peer,
              "denoising_ratio": peer["denoising_seconds_per_frame"] / ours["denoising_seconds_per_frame"]}  # fmt: skip
    if cfg.decode:
        decode = report["decode_seconds_per_frame"] = measure_decode(device)
        report["total_ratio"] = ((peer["denoising_seconds_per_frame"] + decode)
                                 / (ours["denoising_seconds_per_frame"] + decode))  # fmt: skip
    print(f"\n{report['threads']} threads, {device}; a {cfg.video_seconds} s video ({video_frames} frames):\n")
    print("| | frame-evaluations per frame | seconds per frame-evaluation | denoising seconds per frame |")
    print("|---|---|---|---|")
    print(f"| ours, paper configuration, default steps | {ours['evaluations_per_frame']:.2f} "
          f"+ {ours['inversion_evaluations']} / {video_frames} (inversion) | {ours['seconds_per_evaluation']:.2f} "
          f"| {ours['denoising_seconds_per_frame']:.1f} |")  # fmt: skip
    print(f"| AniPortrait's denoiser, {cfg.peer.steps} steps x CFG | {peer['evaluations_per_frame']} "
          f"| {peer['seconds_per_evaluation']:.2f} | {peer['denoising_seconds_per_frame']:.1f} |")  # fmt: skip
    summary = f"\ndenoising: the peer takes {report['denoising_ratio']:.1f}x our time per frame"
    if cfg.decode:
        summary += (f"; with the SD VAE decode ({report['decode_seconds_per_frame']:.1f} s a frame, both): "
                    f"{report['total_ratio']:.1f}x")  # fmt: skip
    print(summary)
    if cfg.json:
        write_json_atomic(cfg.json, report)
        print(f"wrote {cfg.json}")
    return report


if __name__ == "__main__":
    main()
