"""Build a stage's modules from the configs, print parameter counts, optionally time one training step.

    python scripts/model_summary.py experiment=paper/stage1 autoencoder.random_init=true forward_backward=true
    python scripts/model_summary.py experiment=paper/stage3 autoencoder.random_init=true forward_backward=true \
        trainer.batch_size=1 gradient_checkpointing=true json=stage3.json

Every stage: 1, 2 (the linear classifier over z_sem), 3 with `stage3.target=video` or `landmarks`. Stages 2 and 3
start from a stage-1 export; with `stage2.feature_space` / `stage3.feature_space` null (or `random_feature_space`
true) the stage-1 modules are built from the configs with random weights instead, so a recipe can be summarised
without trained weights. `forward_backward=true` runs one training step (forward, backward, optimiser step) on a
random batch of `trainer.batch_size` items under the recipe's mixed precision (autocast, as Accelerate does) and
reports its time and peak memory: `torch.cuda.max_memory_allocated` on CUDA; on the CPU the process's peak RSS
and that peak minus the RSS just before the step (peak RSS is a process-wide high-water mark).
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR
from faceedittalker.data.attributes import CELEBA_ATTRIBUTES
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.models.feature_space import ImageFeatureSpace
from faceedittalker.stages import STAGES, Stage, StageModules
from faceedittalker.stages.base import configured_autoencoder_path
from faceedittalker.stages.stage1 import Stage1
from faceedittalker.training.trainer import enable_gradient_checkpointing

Batch = Callable[[torch.device], dict]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def feature_space(cfg: DictConfig, export: str | None) -> ImageFeatureSpace:
    """The stage-1 model of a later stage: `export` loaded, or the configs' modules with random weights."""
    if export and not cfg.random_feature_space:
        try:
            return ImageFeatureSpace.from_pretrained(export, autoencoder_path=configured_autoencoder_path(cfg))
        except InputError as err:
            raise InputError(f"{err} (random_feature_space=true summarises with random stage-1 weights)") from None
    print("stage-1 model: random weights built from the configs (no export loaded)")
    stage1 = Stage1(cfg)
    modules = stage1.build_modules()
    return stage1.feature_space({**modules.trainable, **modules.frozen})


def audio_dim(cfg: DictConfig) -> int:
    """P_ldm's input width without loading the audio model: log-mel bands, or `summary_audio_dim` (wav2vec2)."""
    return int(cfg.audio_encoder.n_mels) if "n_mels" in cfg.audio_encoder else int(cfg.summary_audio_dim)


def build(cfg: DictConfig) -> tuple[Stage, StageModules, Batch]:
    """The stage, its modules and a random training batch of `trainer.batch_size` items, without any data."""
    if cfg.stage not in STAGES:
        raise InputError(f"stage={cfg.stage} is not one of {sorted(STAGES)}")
    stage, size = STAGES[cfg.stage](cfg), int(cfg.trainer.batch_size)
    if cfg.stage == 1:
        modules = stage.build_modules()
        res = cfg.resolution
        return stage, modules, lambda d: {"image": torch.rand(size, 3, res, res, device=d) * 2 - 1}
    if cfg.stage == 2:  # the classifier is sized by the codes: random codes of the stage-1 E_sem's width
        stage.space = feature_space(cfg, cfg.stage2.feature_space)
        z_dim = stage.space.semantic_encoder.config.z_dim
        stage.names, stage.train_codes = list(CELEBA_ATTRIBUTES), torch.randn(256, z_dim)
        modules = stage.build_modules()
        names = len(stage.names)
        return stage, modules, lambda d: {"z_sem": torch.randn(size, z_dim, device=d),
                                          "labels": (torch.rand(size, names, device=d) > 0.5).float()}
    if cfg.stage3.target == "landmarks":
        stage.audio_dim = audio_dim(cfg)
        modules = stage.build_modules()
        frames = int(cfg.stage3.landmarks.num_frames)
        return stage, modules, lambda d: {
            "reference_landmarks": torch.rand(size, 478, 3, device=d),
            "landmarks": torch.rand(size, frames, 478, 3, device=d),
            "audio_features": torch.randn(size, frames, stage.audio_dim, device=d),
        }
    stage.set_feature_space(feature_space(cfg, cfg.stage3.feature_space))
    modules = stage.build_modules()
    space, video = stage.space, cfg.stage3.video
    frames, res, lm = int(video.num_frames), space.resolution, stage.landmark_image_size
    latent = res // space.autoencoder.downsample_factor

    def batch(d: torch.device) -> dict:
        items = {"landmark_images": torch.rand(size, frames, 3, lm, lm, device=d),
                 "landmarks": torch.rand(size, frames, 478, 3, device=d),
                 "reference_landmark_image": torch.rand(size, 3, lm, lm, device=d)}
        if video.latent_cache:  # what training reads from the per-clip cache: no VAE in the step
            channels, z_dim = space.autoencoder.latent_channels, space.semantic_encoder.config.z_dim
            return {**items, "latents": torch.randn(size, frames, channels, latent, latent, device=d),
                    "reference_z_sem": torch.randn(size, z_dim, device=d)}
        return {**items, "frames": torch.rand(size, frames, 3, res, res, device=d) * 2 - 1,
                "reference": torch.rand(size, 3, res, res, device=d) * 2 - 1}

    return stage, modules, batch


def rss_bytes() -> int:
    """The process's resident set size now (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def training_step(cfg: DictConfig, stage: Stage, modules: StageModules, batch: Batch) -> dict:
    """One optimiser step on a random batch; its time and peak memory."""
    device = torch.device(cfg.device)
    all_modules = {**modules.trainable, **modules.frozen}
    for module in all_modules.values():
        module.to(device)
    for module in modules.frozen.values():
        module.eval()
    for module in modules.trainable.values():
        module.train()
    params = [p for m in modules.trainable.values() for p in m.parameters() if p.requires_grad]
    optimizer = instantiate(cfg.trainer.optimizer)(params)
    precision = cfg.trainer.mixed_precision
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    items = batch(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before, peak_before = rss_bytes(), peak_rss_bytes()
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):  # as Accelerate wraps the forward
        loss = stage.training_step(items, all_modules)
    loss.backward()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    grads = sum(p.grad is not None for p in params)
    result = {"device": str(device), "mixed_precision": precision, "batch_size": int(cfg.trainer.batch_size),
              "gradient_checkpointing": bool(cfg.gradient_checkpointing), "loss": float(loss.detach()),
              "parameters_with_gradients": grads, "seconds": seconds}
    if device.type == "cuda":
        result["cuda_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated()
    else:
        peak = peak_rss_bytes()
        result.update(rss_before_step_bytes=rss_before, peak_rss_bytes=peak,
                      step_peak_above_rss_before_bytes=peak - rss_before,
                      # the step never rose above an earlier high-water mark: the figure is a lower bound
                      step_peak_is_lower_bound=peak == peak_before)
    return result


def gib(value: int) -> str:
    return f"{value / 2**30:.2f} GiB"


@hydra.main(config_path=str(CONFIGS_DIR), config_name="summary", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    stage, modules, batch = build(cfg)
    report: dict = {"stage": stage.name, "parameters": {}}
    for kind, group in (("trainable", modules.trainable), ("frozen", modules.frozen)):
        for name, module in group.items():
            report["parameters"][name] = {"kind": kind, "count": count(module)}
            print(f"{name:>20} ({kind}): {count(module) / 1e6:8.2f} M parameters")
    trainable = sum(count(m) for m in modules.trainable.values())
    report["trainable_parameters"] = trainable
    print(f"{'trainable total':>20}: {trainable / 1e6:8.2f} M")
    if cfg.gradient_checkpointing:
        report["checkpointed_modules"] = enable_gradient_checkpointing(modules.trainable)
    if cfg.forward_backward:
        step = report["training_step"] = training_step(cfg, stage, modules, batch)
        memory = (f"max_memory_allocated {gib(step['cuda_max_memory_allocated_bytes'])}" if "cuda" in step["device"]
                  else f"peak RSS {gib(step['peak_rss_bytes'])}, {gib(step['step_peak_above_rss_before_bytes'])} above "
                       f"the RSS before the step{' (lower bound)' if step['step_peak_is_lower_bound'] else ''}")
        print(f"one training step at batch {step['batch_size']} (mixed precision {step['mixed_precision']}, "
              f"gradient checkpointing {'on' if step['gradient_checkpointing'] else 'off'}): loss {step['loss']:.4f}, "
              f"{step['parameters_with_gradients']} gradients, {step['seconds']:.1f} s on {step['device']}, {memory}")
    if cfg.json:
        Path(cfg.json).expanduser().write_text(json.dumps(report, indent=2))
        print(f"wrote {cfg.json}")


if __name__ == "__main__":
    main()
