"""The whole method on a CPU in minutes: every stage with the tiny recipes, one model folder, one video.

    python scripts/quickstart.py [output=runs/quickstart]

Steps (each skipped when done, so re-running continues where it stopped; `max_steps.<stage>=N` sets a stage's
training budget, shorter than the recipe's by default so that the whole run takes ~23 minutes on 2 CPU cores;
`quickstart=tiny_latent` runs the 128 px recipes, after a stage 0 that trains the world's VAE, `tiny_latent/*`):
  1. stage 1 (Alg. 1) on synthetic faces          experiment=tiny/stage1_v (plain v-MSE: a z_sem that edits)
  2. stage 2 (Alg. 2), the attribute library       experiment=tiny/stage2
  3. P_ldm (audio -> landmarks) on synthetic clips experiment=tiny/landmarks
  4. stage 3 (Alg. 3), the video model             experiment=tiny/stage3
  5. the face upsampler (32 px -> 128 px faces)     experiment=tiny/upsampler (stage 0, beyond the paper)
  6. the model folder (scripts/export_model.py)
  7. the upsampler refined on the model's own frames: pairs (scripts/make_upsampler_pairs.py), then
     experiment=tiny/upsampler_refine, put into the model folder (`recipes.upsampler_refine=null` skips it)
  8. Alg. 4 on a held-out synthetic portrait and committed speech (scripts/infer.py) -> <output>/quickstart.mp4
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig
from PIL import Image

from faceedittalker import CONFIGS_DIR, DEMO_SPEECH
from faceedittalker.errors import exit_on_input_error
from faceedittalker.synthetic.face import RENDERED_ATTRIBUTES
from faceedittalker.synthetic.sets import held_out_portrait

SCRIPTS = Path(__file__).resolve().parent


def steps(out: Path, cfg: DictConfig) -> list[tuple[str, list[str]]]:
    """(name, command) of every step, in order."""
    cache = f"paths.cache_dir={out / 'cache'}"
    speech = cfg.speech or str(DEMO_SPEECH)
    edit = [f"edit={cfg.edit}", f"alpha={cfg.alpha}"] if cfg.edit else []

    latent = bool(cfg.recipes.get("stage0"))  # a VAE of the world's own first (stage 0), then stages in its latents
    vae = [f"autoencoder.pretrained={out / 'stage0' / 'export' / 'autoencoder'}"] if latent else []
    upsample = bool(cfg.recipes.get("upsampler"))  # a pixel-space model's faces decoded x4 (32 px -> 128 px)
    refine = upsample and bool(cfg.recipes.get("upsampler_refine"))  # ... then refined on the model's own frames
    model, pairs = out / "model", out / "upsampler_pairs"

    def train(name: str, *extra: str) -> list[str]:
        budget = cfg.max_steps.get(name)
        steps = [f"trainer.max_steps={budget}"] if budget else []
        recipe = cfg.recipes.get(name, f"tiny/{name}")
        settings = list(cfg.overrides.get(name) or [])
        return ["train.py", f"experiment={recipe}", f"hydra.run.dir={out / name}", cache, *steps, *settings, *extra]

    return [
        *([("stage0", train("stage0"))] if latent else []),
        ("stage1", train("stage1", *vae)),
        ("stage2", train("stage2", f"stage2.feature_space={out / 'stage1' / 'export'}", *vae)),
        ("landmarks", train("landmarks")),
        ("stage3", train("stage3", f"stage3.feature_space={out / 'stage1' / 'export'}", *vae)),
        *([("upsampler", train("upsampler"))] if upsample else []),
        ("model", ["export_model.py", f"video={out / 'stage3' / 'export'}", f"landmarks={out / 'landmarks' / 'export'}",
                   f"attributes={out / 'stage2' / 'export'}", f"output={model}",
                   *([f"upsampler={out / 'upsampler' / 'export'}"] if upsample else []),
                   *list(cfg.overrides.get("model") or [])]),  # the model's edit defaults (export_model.yaml)
        *([("upsampler_pairs", ["make_upsampler_pairs.py", f"model={model}", f"output={pairs}", "overwrite=true",
                                *list(cfg.overrides.get("upsampler_pairs") or [])]),
           ("upsampler_refine", train("upsampler_refine", f"stage0.upsampler.pairs={pairs}",
                                      f"stage0.upsampler.init={out / 'upsampler' / 'export'}")),
           ("model_upsampler", ["export_model.py", f"model={model}",  # the refined one replaces the first
                                f"upsampler={out / 'upsampler_refine' / 'export'}"])] if refine else []),
        ("video", ["infer.py", f"ref={out / 'portrait.png'}", f"audio={speech}", f"model={model}", *edit,
                   f"output={out / 'quickstart.mp4'}"]),
    ]  # fmt: skip


@hydra.main(config_path=str(CONFIGS_DIR), config_name="quickstart", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    out = Path(cfg.output).expanduser().resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    done = out / ".done"
    done.mkdir(exist_ok=True)
    portrait = out / "portrait.png"
    if not portrait.is_file():  # a person no stage has seen, without glasses, and without the edit's attribute
        forced = {"Eyeglasses": False}  # when it adds it (with it when alpha < 0), so that the edit shows
        if isinstance(cfg.edit, str) and cfg.edit in RENDERED_ATTRIBUTES:
            forced[cfg.edit] = float(cfg.alpha) < 0
        image, _ = held_out_portrait(index=0, size=cfg.portrait_size, **forced)
        Image.fromarray(image).save(portrait)
    env = dict(os.environ)
    if cfg.threads:
        env["OMP_NUM_THREADS"] = str(cfg.threads)
    start = time.perf_counter()
    plan = steps(out, cfg)
    for number, (name, command) in enumerate(plan, 1):
        if (done / name).is_file():
            print(f"[{number}/{len(plan)}] {name}: done before, skipped")
            continue
        log = out / "logs" / f"{name}.log"
        print(f"[{number}/{len(plan)}] {name}: python scripts/{' '.join(command)}  (log: {log})", flush=True)
        began = time.perf_counter()
        with open(log, "w") as stream:
            result = subprocess.run([sys.executable, str(SCRIPTS / command[0]), *command[1:]], stdout=stream,
                                    stderr=subprocess.STDOUT, env=env)  # fmt: skip
        if result.returncode:
            tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
            print(f"error: quickstart step {name} failed (exit {result.returncode}): {tail[0]}; see {log}",
                  file=sys.stderr)  # fmt: skip
            sys.exit(result.returncode)
        (done / name).write_text(f"{time.perf_counter() - began:.0f} s\n")
        print(f"    {name}: {time.perf_counter() - began:.0f} s", flush=True)
    print(f"quickstart finished in {time.perf_counter() - start:.0f} s: {out / 'quickstart.mp4'}")


if __name__ == "__main__":
    main()
