"""Achieved FLOP/s of the paper-size denoiser as a share of this machine's measured matmul peak.

    python scripts/benchmark_flops.py                       # fp32 and bf16, forward and one training step
    python scripts/benchmark_flops.py dtypes=[fp32] json=flops.json

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode (matmuls and convolutions: what the counter knows),
time is the best of `repeats` runs after one warm-up. The peak is a large square torch.matmul measured in the
same run, per dtype. The same is done for a diffusers UNet2DConditionModel of the same width (channels, layers per
block, attention resolutions, head size, cross-attention width), the stock model this composition replaces.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import hydra
import torch
from diffusers import UNet2DConditionModel
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.flop_counter import FlopCounterMode

from faceedittalker import CONFIGS_DIR
from faceedittalker.benchmark import best_seconds
from faceedittalker.errors import InputError, exit_on_input_error

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak(size: int, dtype: torch.dtype, repeats: int) -> float:
    """FLOP/s of a size x size x size matmul (2 n^3 FLOPs)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return 2 * size**3 / best_seconds(lambda: torch.matmul(a, b), repeats)


def counted_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def diffusers_unet(cfg: DictConfig) -> UNet2DConditionModel:
    """UNet2DConditionModel with the width of `cfg.unet` at the latent size: cross-attention blocks at the
    attention resolutions, plain ResNet blocks elsewhere."""
    unet, size = cfg.unet, cfg.resolution // 8
    resolutions = [size // 2**i for i in range(len(unet.channel_mult))]
    down = [("CrossAttnDownBlock2D" if r in unet.attention_resolutions else "DownBlock2D") for r in resolutions]
    up = [("CrossAttnUpBlock2D" if r in unet.attention_resolutions else "UpBlock2D") for r in reversed(resolutions)]
    channels = [unet.base_channels * m for m in unet.channel_mult]
    return UNet2DConditionModel(sample_size=size, in_channels=4, out_channels=4, down_block_types=down,
                                up_block_types=up, block_out_channels=channels, layers_per_block=unet.layers_per_block,
                                attention_head_dim=[max(c // unet.attention_head_dim, 1) for c in channels],
                                cross_attention_dim=unet.cross_attention_dim, norm_num_groups=unet.norm_num_groups)


def measure(name: str, forward: Callable[[], torch.Tensor], dtype: torch.dtype, peak: float, repeats: int,
            training_step: bool) -> dict:
    """Achieved FLOP/s of the forward (no grad) and of forward + backward, under autocast for bf16."""
    autocast = lambda: torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)  # noqa: E731

    def infer() -> None:
        with torch.no_grad(), autocast():
            forward()

    def train() -> None:
        with autocast():
            loss = forward().float().square().mean()
        loss.backward()

    results = {}
    for kind, fn in (("forward", infer), ("training_step", train))[: 2 if training_step else 1]:
        flops, seconds = counted_flops(fn), best_seconds(fn, repeats)
        results[kind] = {"flops": flops, "seconds": seconds, "flop_per_s": flops / seconds,
                         "share_of_peak": round(flops / seconds / peak, 3)}
        print(f"| {name} | {kind} | {flops / 1e9:.1f} GFLOP | {seconds:.3f} s | {flops / seconds / 1e9:.1f} GFLOP/s | "
              f"{100 * flops / seconds / peak:.0f} % |")
    return results


@hydra.main(config_path=str(CONFIGS_DIR), config_name="benchmark_flops", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    unknown = sorted(set(cfg.dtypes) - set(DTYPES))
    if unknown:
        raise InputError(f"dtypes: {unknown} not in {sorted(DTYPES)}")
    torch.manual_seed(0)
    size, batch = cfg.resolution // 8, cfg.batch_size
    ours = instantiate(cfg.unet, _convert_="all", in_channels=4, out_channels=4, sample_size=size, z_dim=512)
    theirs = diffusers_unet(cfg) if cfg.compare_diffusers else None
    x, t = torch.randn(batch, 4, size, size), torch.full((batch,), 500)
    z_sem, tokens = torch.randn(batch, 512), torch.randn(batch, cfg.unet.z_tokens, cfg.unet.cross_attention_dim)
    models = {"ConditionalUNet (ours)": lambda: ours(x, t, z_sem)}
    if theirs is not None:
        models["diffusers UNet2DConditionModel"] = lambda: theirs(x, t, tokens).sample
    params = {"ConditionalUNet (ours)": ours, "diffusers UNet2DConditionModel": theirs}
    report: dict = {"batch_size": batch, "latent_size": size, "threads": torch.get_num_threads(), "results": {}}
    print(f"batch {batch} of 4 x {size} x {size} latents, {torch.get_num_threads()} threads")
    for dtype_name in cfg.dtypes:
        dtype = DTYPES[dtype_name]
        peak = matmul_peak(cfg.matmul_size, dtype, cfg.repeats)
        print(f"\n{dtype_name}: matmul peak {peak / 1e9:.1f} GFLOP/s ({cfg.matmul_size}^3)\n")
        print("| model | pass | FLOPs | time | achieved | share of peak |\n|---|---|---|---|---|---|")
        entry = report["results"][dtype_name] = {"matmul_peak_flop_per_s": peak}
        for name, forward in models.items():
            entry[name] = measure(name, forward, dtype, peak, cfg.repeats, cfg.training_step)
            entry[name]["parameters"] = sum(p.numel() for p in params[name].parameters())
    if cfg.json:
        Path(cfg.json).expanduser().write_text(json.dumps(report, indent=2))
        print(f"wrote {cfg.json}")


if __name__ == "__main__":
    main()
