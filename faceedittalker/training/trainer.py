"""One generic Accelerate trainer for every stage.

Mixed precision, gradient accumulation, gradient clipping, EMA, LR warm-up, atomic rotating checkpoints with
automatic resume, trackers (none / tensorboard / wandb), a progress bar and periodic sample images.
`accelerate launch scripts/train.py ...` runs it on several GPUs with no code change.

Run folder layout (`hydra.run.dir`):
    checkpoints/checkpoint-XXXXXXXX/   accelerate state + EMA (safetensors) + trainer_state.json
    export/<module>/                   EMA weights as config.json + safetensors (`from_pretrained`)
    samples/step-XXXXXXXX.png          periodic sample grids
    logs/                              tracker output
"""

from __future__ import annotations

import itertools
import logging
import math
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from diffusers.training_utils import EMAModel
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from faceedittalker.errors import InputError
from faceedittalker.stages.base import Stage
from faceedittalker.training import checkpoint as ckpt
from faceedittalker.utils.files import atomic_directory

log = logging.getLogger(__name__)


class Trainer:
    """Runs `stage` with the `trainer` section of the config; everything lands in `run_dir`."""

    def __init__(self, cfg: DictConfig, stage: Stage, run_dir: str | Path):
        self.cfg = cfg
        self.tcfg = cfg.trainer
        self.stage = stage
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        logger = cfg.get("logger") or {}
        self.accelerator = Accelerator(
            gradient_accumulation_steps=self.tcfg.gradient_accumulation_steps,
            mixed_precision=self.tcfg.mixed_precision,
            log_with=logger.get("log_with"),
            project_config=ProjectConfiguration(project_dir=str(self.run_dir), logging_dir=str(self.run_dir / "logs")),
            cpu=self.tcfg.get("cpu", False),
            # Seed + epoch fix each epoch's shuffle, so a resumed run sees the batches the killed one would have.
            # data_seed: without it the sampler seeds from torch's initial seed, which set_seed(device_specific)
            # makes seed + rank, so every rank shuffled differently and took its shard of a different permutation
            # (a global batch of duplicates and misses, not the one-device batch; tests/test_train.py two_ranks).
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=int(cfg.seed)),
        )
        self.step = 0

    # ----- set-up ----------------------------------------------------------------------------------------
    def _per_device_batch_size(self) -> int:
        """`trainer.batch_size` is the global batch (paper Table I: 16) over devices and accumulation."""
        split = self.accelerator.num_processes * self.tcfg.gradient_accumulation_steps
        if self.tcfg.batch_size % split:
            raise InputError(f"trainer.batch_size={self.tcfg.batch_size} is not divisible by "
                             f"{self.accelerator.num_processes} processes x {self.tcfg.gradient_accumulation_steps} "
                             "accumulation steps")
        return self.tcfg.batch_size // split

    def _build(self) -> None:
        acc = self.accelerator
        set_seed(self.cfg.seed, device_specific=True)
        dataset = self.stage.build_dataset()
        batch_size = self._per_device_batch_size()
        if len(dataset) < batch_size:
            raise InputError(f"the dataset has {len(dataset)} samples, fewer than one batch of {batch_size}")
        sample_set = self.stage.sample_dataset(dataset)
        sample_items = self.stage.sample_indices(sample_set, self.tcfg.num_sample_images)
        self.sample_batch = next(iter(DataLoader(Subset(sample_set, sample_items), batch_size=len(sample_items))))
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                            num_workers=self.tcfg.num_workers, persistent_workers=self.tcfg.num_workers > 0,
                            generator=torch.Generator().manual_seed(self.cfg.seed))
        modules = self.stage.build_modules()
        if self.tcfg.get("gradient_checkpointing", False):
            enable_gradient_checkpointing(modules.trainable)
        self.names = list(modules.trainable)
        optimizer = instantiate(self.tcfg.optimizer)(self._parameter_groups(modules.trainable))
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]

        prepared = acc.prepare(*modules.trainable.values(), optimizer, loader)
        self.models = dict(zip(self.names, prepared[: len(self.names)], strict=True))
        self.optimizer, self.loader = prepared[len(self.names):]
        self.frozen = {k: m.to(acc.device).eval() for k, m in modules.frozen.items()}
        self.emas = {name: EMAModel(acc.unwrap_model(m).parameters(), decay=self.tcfg.ema.decay,
                                    update_after_step=self.tcfg.ema.update_after_step)
                     for name, m in self.models.items()}
        for ema in self.emas.values():
            ema.to(acc.device)
        if acc.is_main_process:
            for name, model in self.models.items():
                count = sum(p.numel() for p in model.parameters())
                log.info("%s: %.2fM trainable parameters", name, count / 1e6)
            logger = self.cfg.get("logger") or {}
            init_kwargs = OmegaConf.to_container(logger.get("init_kwargs") or OmegaConf.create(), resolve=True)
            if logger.get("log_with") == "wandb":  # keep wandb's files in the run folder, not the cwd
                (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
                init_kwargs.setdefault("wandb", {}).setdefault("dir", str(self.run_dir / "logs"))
            acc.init_trackers(self.stage.name, config=_flat_config(self.cfg), init_kwargs=init_kwargs)

    def _parameter_groups(self, trainable: dict[str, nn.Module]) -> list:
        """The optimiser's parameters: one group (the default), or one per trainable module when
        `trainer.lr_scale` names modules (their learning rate is `optimizer.lr` times the scale; the others 1)."""
        scales = dict(self.tcfg.get("lr_scale") or {})
        unknown = sorted(set(scales) - set(trainable))
        if unknown:
            raise InputError(f"trainer.lr_scale names {unknown}, not trainable in this stage ({sorted(trainable)})")
        if not scales:
            return list(itertools.chain.from_iterable(m.parameters() for m in trainable.values()))
        base = float(self.tcfg.optimizer.lr)
        return [{"params": list(m.parameters()), "lr": base * float(scales.get(name, 1.0))}
                for name, m in trainable.items()]

    # ----- checkpoints -----------------------------------------------------------------------------------
    def _resume(self) -> None:
        resume = self.tcfg.resume
        if not resume:
            return
        ckpt.remove_partial_checkpoints(self.checkpoint_dir)
        if resume == "auto":
            path = ckpt.latest_checkpoint(self.checkpoint_dir)
            if path is None:
                return
        else:
            path = Path(resume).expanduser()
            if not (path / ckpt.STATE_FILE).is_file():
                raise InputError(f"checkpoint not found or incomplete: {path}")
        try:
            self.accelerator.load_state(str(path))
        except (RuntimeError, ValueError) as err:
            if not _is_state_mismatch(err):  # out of memory, a broken file, ...: a real failure, not bad input
                raise
            raise InputError(f"{path} does not fit this configuration ({str(err).splitlines()[0][:200]}); use "
                             "another hydra.run.dir or trainer.resume=null to start afresh") from err
        state = ckpt.read_state(path)
        self.step = int(state["step"])
        ema_weights = ckpt.load_tensors(path / "ema.safetensors")
        for name, ema in self.emas.items():
            ema.shadow_params = [ema_weights[f"{name}.{i}"].to(self.accelerator.device)
                                 for i in range(len(ema.shadow_params))]
            ema.optimization_step = state["ema_steps"][name]
        log.info("resumed from %s at step %d", path, self.step)

    def _save_checkpoint(self) -> None:
        acc = self.accelerator
        tmp = ckpt.temporary_path(self.checkpoint_dir, self.step)
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        if acc.is_main_process:
            ckpt.save_tensors({f"{name}.{i}": p for name, ema in self.emas.items()
                               for i, p in enumerate(ema.shadow_params)}, tmp / "ema.safetensors")
            state = {"step": self.step, "ema_steps": {n: e.optimization_step for n, e in self.emas.items()}}
            path = ckpt.finalize(tmp, state, keep=self.tcfg.keep_checkpoints)
            self.export()
            log.info("saved %s", path)
        acc.wait_for_everyone()

    def _set_learning_rate(self) -> float:
        """Linear warm-up over `lr_warmup_steps`, then constant (DiffAE). A function of the step alone, so a
        resumed run needs no scheduler state."""
        factor = min(1.0, (self.step + 1) / max(int(self.tcfg.lr_warmup_steps), 1))
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        return self.base_lrs[0] * factor

    def _with_ema(self, fn):
        """Run fn with the EMA weights swapped into the (unwrapped) trainable modules."""
        unwrapped = {n: self.accelerator.unwrap_model(m) for n, m in self.models.items()}
        for name, model in unwrapped.items():
            self.emas[name].store(model.parameters())
            self.emas[name].copy_to(model.parameters())
        try:
            return fn(unwrapped)
        finally:
            for name, model in unwrapped.items():
                self.emas[name].restore(model.parameters())

    def export(self) -> Path:
        """Write the EMA weights of every trainable module as `save_pretrained` folders (atomically)."""
        export_dir = self.run_dir / "export"

        def write(unwrapped):
            with atomic_directory(export_dir) as tmp:
                for name, model in unwrapped.items():
                    model.save_pretrained(tmp / name)
                self.stage.export(tmp, {**unwrapped, **self.frozen})

        self._with_ema(write)
        return export_dir

    def _save_sample(self) -> None:
        batch = {k: v.to(self.accelerator.device) if torch.is_tensor(v) else v for k, v in self.sample_batch.items()}

        def draw(unwrapped):
            for model in unwrapped.values():
                model.eval()
            try:
                return self.stage.sample(batch, {**unwrapped, **self.frozen})
            finally:
                for model in unwrapped.values():
                    model.train()

        grid = self._with_ema(draw)
        if grid is None:
            return
        path = self.run_dir / "samples" / f"step-{self.step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(path)
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.writer.add_image("samples", grid, self.step, dataformats="HWC")
        log.info("wrote %s", path)

    # ----- the loop --------------------------------------------------------------------------------------
    def fit(self) -> Path:
        """Train until `trainer.max_steps` optimiser steps, resuming if a checkpoint exists; returns export/."""
        self._build()
        self._resume()
        acc, tcfg = self.accelerator, self.tcfg
        # Accelerate also steps the optimiser at the end of the loader, on a shorter last group when the loader
        # length is not a multiple of the accumulation steps: an epoch has ceil(len / k) optimiser steps.
        steps_per_epoch = math.ceil(len(self.loader) / tcfg.gradient_accumulation_steps)
        progress = tqdm(total=tcfg.max_steps, initial=self.step, desc=f"{self.stage.name}",
                        disable=not acc.is_local_main_process, dynamic_ncols=True)
        for model in self.models.values():
            model.train()
        params = [p for m in self.models.values() for p in m.parameters()]
        # The logged loss: the mean over every micro-batch since the last log, then over the ranks (as DiT).
        loss_sum, loss_count = torch.zeros((), device=acc.device), 0
        while self.step < tcfg.max_steps:
            epoch, done_in_epoch = divmod(self.step, steps_per_epoch)
            self.loader.set_epoch(epoch)  # a different, reproducible shuffle per epoch
            loader = self.loader
            if done_in_epoch:  # resuming mid-epoch: skip what the killed run already consumed
                loader = acc.skip_first_batches(self.loader, done_in_epoch * tcfg.gradient_accumulation_steps)
            for batch in loader:
                lr = self._set_learning_rate()
                with acc.accumulate(*self.models.values()):
                    loss = self.stage.training_step(batch, {**self.models, **self.frozen})
                    # No finiteness check here: it would wait for the device every micro-step. A non-finite loss
                    # makes loss_sum non-finite, which `_mean_loss` catches at the next log or checkpoint.
                    acc.backward(loss)
                    loss_sum += loss.detach().float()
                    loss_count += 1
                    if acc.sync_gradients and tcfg.max_grad_norm:
                        acc.clip_grad_norm_(params, tcfg.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                if not acc.sync_gradients:
                    continue
                for name, model in self.models.items():
                    self.emas[name].step(acc.unwrap_model(model).parameters())
                self.step += 1
                progress.update(1)
                last = self.step == tcfg.max_steps
                log_now = self.step % tcfg.log_every == 0 or last
                checkpoint_now = self.step % tcfg.checkpoint_every == 0 or last
                if log_now or checkpoint_now:  # never checkpoint weights a non-finite loss has reached
                    mean_loss = self._mean_loss(loss_sum, loss_count)
                if log_now:
                    loss_sum, loss_count = torch.zeros((), device=acc.device), 0
                    progress.set_postfix(loss=f"{mean_loss:.4f}")
                    acc.log({"loss": mean_loss, "lr": lr}, step=self.step)
                if checkpoint_now:
                    self._save_checkpoint()
                if acc.is_main_process and (self.step % tcfg.sample_every == 0 or self.step == tcfg.max_steps):
                    self._save_sample()
                if self.step >= tcfg.max_steps:
                    break
        progress.close()
        if acc.is_main_process and not (self.run_dir / "export").is_dir():  # resumed from a copied checkpoint
            self.export()
        acc.wait_for_everyone()
        acc.end_training()  # also ends the process group: nothing may synchronise the ranks after it
        return self.run_dir / "export"

    def _mean_loss(self, loss_sum: torch.Tensor, loss_count: int) -> float:
        """The loss averaged over the micro-batches since the last log and over the ranks (every rank calls it):
        the one device sync of the loop. A non-finite value stops the run."""
        mean = self.accelerator.reduce(loss_sum / max(loss_count, 1), reduction="mean").item()
        if not math.isfinite(mean):
            raise RuntimeError(f"the loss became {mean} before step {self.step} (mean since the last log); lower "
                               "the learning rate")
        return mean


def enable_gradient_checkpointing(modules: dict[str, nn.Module]) -> list[str]:
    """Turn on diffusers' gradient checkpointing in every module that supports it (`trainer.gradient_checkpointing`:
    activations are recomputed in the backward pass, about one more forward pass for less memory); returns their
    names."""
    names = [name for name, module in modules.items() if getattr(module, "_supports_gradient_checkpointing", False)]
    for name in names:
        modules[name].enable_gradient_checkpointing()
    others = sorted(set(modules) - set(names))
    log.info("gradient checkpointing in %s%s", ", ".join(names) or "no module",
             f" (not supported by {', '.join(others)})" if others else "")  # fmt: skip
    return names


def _is_state_mismatch(err: BaseException) -> bool:
    """Whether loading a checkpoint failed because it was saved for other modules or another optimiser (a changed
    config): torch's `load_state_dict` messages for missing/unexpected keys, wrong shapes and parameter groups."""
    message = str(err)
    if isinstance(err, RuntimeError):
        return message.startswith("Error(s) in loading state_dict")
    return "parameter group" in message and ("doesn't match the size" in message or "different number" in message)


def _flat_config(cfg: DictConfig) -> dict[str, int | float | str | bool]:
    """The run config as `{"trainer.optimizer.lr": 1e-4, ...}` with scalar values, as trackers want it."""
    flat: dict[str, int | float | str | bool] = {}

    def visit(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                visit(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node if isinstance(node, int | float | str | bool) else str(node)

    visit(OmegaConf.to_container(cfg, resolve=True), "")
    return flat
