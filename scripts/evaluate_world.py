"""Score a model folder against the synthetic world's goals (issue 10) with the independent judge.

    python scripts/evaluate_world.py model=faceedittalker/assets/demo_model judge=runs/judge-32px \
        output=runs/world-demo [faces=8 clips=2]

Goal 1: linear-probe AUC of z_sem per attribute vs 8 x 8 pixels; goal 2: edit success (judge) of +alpha / -alpha
on held-out faces, other attributes kept, PSNR outside the edited region; goal 3: Pearson r of the judge's mouth
opening on generated frames vs the truth, driven by true landmarks, frozen reference landmarks and P_ldm from the
audio; goal 4: the same with the edit; and the edit along a user-defined attribute fitted from custom_examples
+ custom_examples example faces (add_attribute's path), scored as goal 2; goal 5, for a model with a face
upsampler: its PSNR against the held-out faces' crops at the generated size, beside bicubic's. Writes
<output>/world.json and <output>/world.png (rows: references, edited references, frames without / with the edit,
mouth-opening curves), with `edit_table=[...]` also <output>/world_table.png (per attribute: reconstructions |
edits, adding and removing), and prints a summary.
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from PIL import Image

from faceedittalker import CONFIGS_DIR
from faceedittalker.cli.options import plain
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.metrics.judge import load_judge
from faceedittalker.metrics.world import (
    custom_attribute_goal,
    edit_goal,
    lipsync_goal,
    semantics_goal,
    table_picture,
    upsampler_goal,
    world_picture,
)
from faceedittalker.models.attributes import MIN_EXAMPLES
from faceedittalker.pipeline import (
    FaceEditTalkerPipeline,
    check_edit_guidance,
    check_edit_guidance_interval,
    check_edit_region,
    check_flag,
)
from faceedittalker.utils.files import atomic_write, write_json_atomic


@hydra.main(config_path=str(CONFIGS_DIR), config_name="evaluate_world", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    if cfg.faces < 1 or cfg.clips < 1 or cfg.clip_seconds < 1 or cfg.probe_faces < 10 or cfg.upsampler_faces < 1:
        raise InputError("need faces >= 1, clips >= 1, clip_seconds >= 1, probe_faces >= 10 and upsampler_faces >= 1")
    if cfg.custom_examples != 0 and cfg.custom_examples < MIN_EXAMPLES:
        raise InputError(f"custom_examples must be 0 (skip) or >= {MIN_EXAMPLES}, got {cfg.custom_examples}")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    pipe = FaceEditTalkerPipeline.from_pretrained(cfg.model, device=cfg.device, upsample=cfg.upsample)
    if cfg.invert_steps is not None:
        pipe.set_invert_steps(cfg.invert_steps)
    if cfg.edit_guidance is not None:
        pipe.edit_guidance = check_edit_guidance(cfg.edit_guidance)  # every edit below, stills and videos
    if cfg.edit_guidance_interval is not None:
        pipe.edit_guidance_interval = check_edit_guidance_interval(plain(cfg.edit_guidance_interval))
    if cfg.edit_region is not None:
        pipe.edit_region = check_edit_region(cfg.edit_region)
    if cfg.edit_reference is not None:
        pipe.edit_reference = check_flag("edit_reference", cfg.edit_reference)
    judge, judge_report = load_judge(cfg.judge, cfg.device)
    resolution = pipe.resolution  # the generated faces' (after the face upsampler, if any)
    if resolution % judge.config.resolution:  # a finer model is read area-downsampled, as the judge's renders are
        raise InputError(f"the judge reads {judge.config.resolution} px faces, the model makes {resolution} px ones, "
                         f"not a whole multiple (train one: scripts/train_judge.py resolution={resolution})")
    table = [cfg.edit_table] if isinstance(cfg.edit_table, str) else list(cfg.edit_table)
    for name in [cfg.edit, *table]:
        if name not in judge.names or name not in pipe.attribute_names:
            raise InputError(f"{name} must be an attribute of the judge ({', '.join(judge.names)}) and of the "
                             "model's attribute library")  # fmt: skip
    keep = [cfg.keep] if isinstance(cfg.keep, str) else list(cfg.keep)
    for name in keep:
        pipe.attribute_library.index(name)  # an unknown name: one line suggesting the closest
    output = Path(cfg.output).expanduser()
    output.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    semantics = semantics_goal(pipe, cfg.cache_dir, cfg.probe_faces, cfg.seed)
    seconds["semantics"] = round(time.perf_counter() - start, 1)
    edits, edit_images = edit_goal(pipe, judge, cfg.edit, cfg.alpha, cfg.faces, cfg.seed, cfg.portrait_size,
                                   cfg.steps, keep=keep)  # fmt: skip
    seconds["edits"] = round(time.perf_counter() - start - sum(seconds.values()), 1)
    edit_table, table_images = {}, {}  # goal 2's table for the other attributes: the same faces, alpha and settings
    for name in table:
        edit_table[name], table_images[name] = edit_goal(pipe, judge, name, cfg.alpha, cfg.faces, cfg.seed,
                                                         cfg.portrait_size, cfg.steps, keep=keep)  # fmt: skip
    if table:
        seconds["edit_table"] = round(time.perf_counter() - start - sum(seconds.values()), 1)
    custom = None
    if cfg.custom_examples:
        custom = custom_attribute_goal(pipe, judge, cfg.edit, cfg.alpha, cfg.faces, cfg.custom_examples, cfg.seed,
                                       cfg.portrait_size, cfg.steps, keep)  # fmt: skip
        seconds["custom_attribute"] = round(time.perf_counter() - start - sum(seconds.values()), 1)
    talking, clip = lipsync_goal(pipe, judge, cfg.edit, cfg.alpha, cfg.clips, cfg.clip_seconds, cfg.seed,
                                 cfg.portrait_size, cfg.steps, cfg.moving_heads, keep)  # fmt: skip
    seconds["lipsync"] = round(time.perf_counter() - start - sum(seconds.values()), 1)
    upsampling = upsampler_goal(pipe, cfg.upsampler_faces, cfg.seed, cfg.portrait_size)  # None without one
    result = {"settings": {k: cfg[k] for k in ("model", "judge", "faces", "clips", "clip_seconds", "probe_faces",
                                               "edit", "alpha", "steps", "invert_steps", "portrait_size", "seed",
                                               "custom_examples", "moving_heads", "upsample",
                                               "upsampler_faces")}
                           | {"face_size": pipe.resolution, "edit_guidance": pipe.edit_guidance,  # as used
                              "edit_guidance_interval": list(pipe.edit_guidance_interval),
                              "edit_region": pipe.edit_region, "edit_reference": pipe.edit_reference,
                              "edit_table": table, "keep": keep,
                              "face_upsampler": None if pipe.face_upsampler is None  # how faces were decoded
                              else {"scale": pipe.face_upsampler.scale, **pipe.face_upsampler.back_projection}},
              "judge_held_out": judge_report["held_out"], "goal1_semantics": semantics, "goal2_edit": edits,
              "goal2_table": edit_table, "goal2_custom_attribute": custom,
              "goal3_lipsync": talking["lipsync"], "goal4_talking_edit": talking["talking_edit"],
              "goal5_upsampler": upsampling,
              "seconds": seconds}  # fmt: skip
    write_json_atomic(output / "world.json", result)
    with atomic_write(output / "world.png") as tmp:
        Image.fromarray(world_picture(edit_images, clip, zoom=cfg.zoom)).save(tmp, format="PNG")
    if table:
        with atomic_write(output / "world_table.png") as tmp:
            picture = table_picture({cfg.edit: edit_images, **table_images}, zoom=cfg.zoom)
            Image.fromarray(picture).save(tmp, format="PNG")

    print(f"goal 1  z_sem probe mean AUC {semantics['mean']['z_sem']} vs pixels {semantics['mean']['pixels']}; "
          f"behind the pixels: {', '.join(semantics['behind_pixels']) or 'none'}")
    for name, figures in {cfg.edit: edits, **edit_table}.items():
        for direction in ("add", "remove"):
            d = figures[direction]
            print(f"goal 2  {direction} {name} (alpha {'+' if direction == 'add' else '-'}{cfg.alpha}): "
                  f"{d['success_rate']:.0%} of {d['faces']} faces (reconstruction alone "
                  f"{d['judge_on_reconstruction']:.0%}), "
                  f"others kept {d['others_kept_rate']:.0%}, PSNR outside {d['masked_psnr_outside_db']} dB")
    if custom is not None:
        print(f"goal 2  {custom['direction']} from {cfg.custom_examples} + {cfg.custom_examples} example faces "
              f"(cosine to the built-in {custom['cosine_to_built_in_direction']}): add "
              f"{custom['add']['success_rate']:.0%}, remove {custom['remove']['success_rate']:.0%}, others kept "
              f"{custom['add']['others_kept_rate']:.0%} / {custom['remove']['others_kept_rate']:.0%}")
    lip = talking["lipsync"]
    print("goal 3  mouth-opening r: " + ", ".join(f"{k} {lip[k]['pearson_r_mean']}" for k in
          ("true_landmarks", "frozen_reference", "audio", "judge_on_truth", "p_ldm_landmarks")))
    print(f"goal 3  P_ldm's lips off the true ones by {lip['p_ldm_lip_error_px']['mean']} px of the frames")
    print("goal 3  PSNR to the rendered truth (crop; mouth box): " + ", ".join(
        f"{k} {v['frame']} dB; {v['mouth']} dB" for k, v in lip["psnr_to_truth_db"].items()))
    print("goal 3  mouth-box brightness vs true opening, r (no model): " + ", ".join(
        f"{k} {v['mean']}" for k, v in lip["mouth_brightness_r"].items()))
    print("goal 3  the real landmarker on upscaled frames, r (share of frames with a face): " + ", ".join(
        f"{k} {v['mean']} ({v['detected']})" for k, v in lip["landmarker_r"].items()))
    t = talking["talking_edit"]
    print(f"goal 4  {cfg.edit} rate on frames {t['judge_rate_without_edit']} -> {t['judge_rate_with_edit']}, "
          f"r change {t['pearson_r_change']}")
    if upsampling is not None:
        print(f"goal 5  the face upsampler, {upsampling['resolution']} -> {upsampling['face_size']} px on "
              f"{upsampling['faces']} held-out faces: {upsampling['psnr_db']} dB (bicubic "
              f"{upsampling['bicubic_psnr_db']} dB)")
    pictures = " and world_table.png" if table else ""
    print(f"wrote {output / 'world.json'} and {output / 'world.png'}{pictures} ({sum(seconds.values()):.0f} s)")


if __name__ == "__main__":
    main()
