"""Speed and memory of Alg. 4: seconds per generated frame by phase (reference, audio + P_ldm, denoising,
decoding, writing), the denoiser's frame-evaluations per frame, peak memory, fp32 vs bf16 (PSNR between them).

    python scripts/benchmark_infer.py                                       # the CPU table of the README
    python scripts/benchmark_infer.py --config-name benchmark_infer_gpu     # the paper configuration on a GPU

Every run is a fresh process, so its peak memory is its own: peak RSS on the CPU (and the peak over the loaded
model, VmHWM reset just before the request), `torch.cuda.max_memory_allocated` on CUDA. Keys:
faceedittalker/configs/benchmark_infer.yaml. Writes a JSON and prints Markdown tables.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from faceedittalker import CONFIGS_DIR, DEMO_PORTRAIT, DEMO_SPEECH
from faceedittalker.benchmark import model_path, run_isolated
from faceedittalker.cli.options import resolve_device
from faceedittalker.errors import exit_on_input_error
from faceedittalker.metrics.image import psnr
from faceedittalker.pipeline import PHASES
from faceedittalker.utils.files import write_json_atomic


def table(reports: list[dict]) -> str:
    lines = ["| model | speech | precision | steps | evaluations / frame | " + " | ".join(PHASES)
             + " | s / frame | peak memory (MB) |", "|---" * (7 + len(PHASES)) + "|"]  # fmt: skip
    for r in reports:
        per = r["seconds_per_frame"]
        measured = sum(per.values())
        cells = [f"{per[p] * 1000:.0f} ms" for p in PHASES]
        total = f"{measured:.3f}"
        if r["evaluations_per_frame"] < r["default_evaluations_per_frame"] - 1e-6:
            # Extrapolated to the default steps: the denoising phase scales with the evaluations.
            default = per["denoising"] * r["default_evaluations_per_frame"] / r["evaluations_per_frame"]
            total += f" ({measured - per['denoising'] + default:.1f} at {r['default_evaluations_per_frame']:.1f} ev.)"
        peak = f"{r['peak_memory_mb']:.0f}" + (f" (+{r['peak_over_loaded_mb']:.0f})" if "peak_over_loaded_mb" in r
                                              else "")  # fmt: skip
        name = f"{r['name']} ({r.get('face_size', '?')} px)" + (", edited reference" if r.get("edit_reference") else "")
        lines.append(f"| {name} | {r['seconds']} s ({r['num_frames']} frames) | {r['precision']} | {r['steps']} "
                     f"| {r['evaluations_per_frame']:.2f} | " + " | ".join(cells) + f" | {total} | {peak} |")
    return "\n".join(lines)


def summarise(reports: list[dict]) -> dict:
    """The runs, and the ratios between runs that differ only in length (peak memory) or precision (PSNR)."""
    ratios, agreement = [], []
    for a in reports:
        for b in reports:
            same = all(a.get(k) == b.get(k) for k in ("name", "precision", "steps", "invert_steps", "frames",
                                                      "edit_reference"))  # fmt: skip
            if same and b["seconds"] > a["seconds"] and not a["frames"]:
                ratios.append({"name": a["name"], "precision": a["precision"], "steps": a["steps"],
                               "seconds": [a["seconds"], b["seconds"]],
                               "peak_memory_ratio": b["peak_memory_mb"] / a["peak_memory_mb"]})  # fmt: skip
            if (a["frames"] and b["frames"] and a["precision"] == "fp32" and b["precision"] == "bf16"
                    and all(a.get(k) == b.get(k) for k in ("name", "seconds", "steps", "invert_steps",
                                                           "edit_reference"))):  # fmt: skip
                dB = psnr(torch.from_numpy(b["crops"]).permute(0, 3, 1, 2).float() / 127.5 - 1,
                          torch.from_numpy(a["crops"]).permute(0, 3, 1, 2).float() / 127.5 - 1)  # fmt: skip
                agreement.append({"name": a["name"], "seconds": a["seconds"], "bf16_vs_fp32_psnr_db": float(dB.mean()),
                                  "bf16_over_fp32_time": b["total_seconds"] / a["total_seconds"]})  # fmt: skip
    runs = [{k: v for k, v in r.items() if k != "crops"} for r in reports]
    return {"runs": runs, "memory_vs_length": ratios, "bf16_vs_fp32": agreement}


@hydra.main(config_path=str(CONFIGS_DIR), config_name="benchmark_infer", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> dict:
    settings = {"device": resolve_device(cfg.device), "threads": cfg.threads,
                "ref": str(Path(cfg.ref or DEMO_PORTRAIT).expanduser()),
                "audio": str(Path(cfg.audio or DEMO_SPEECH).expanduser())}  # fmt: skip
    runs = OmegaConf.to_container(cfg.runs)
    reports: list[dict] = []
    for run in runs:
        run["name"], run["model_path"] = model_path(run.get("model"), Path(cfg.cache_dir))
        print(f"{run['name']}: {run['seconds']} s of speech, {run['precision']} ...", flush=True)
        reports.append(run_isolated(run, settings))
        summary = summarise(reports)
        write_json_atomic(cfg.output, summary)  # after every run, so a long benchmark keeps what it measured
    ratios, agreement = summary["memory_vs_length"], summary["bf16_vs_fp32"]
    print("\n" + table(reports) + "\n")
    for r in ratios:
        print(f"{r['name']} {r['precision']}: peak memory {r['seconds'][1]} s / {r['seconds'][0]} s = "
              f"{r['peak_memory_ratio']:.3f}")
    for r in agreement:
        print(f"{r['name']} ({r['seconds']} s): bf16 vs fp32 PSNR {r['bf16_vs_fp32_psnr_db']:.1f} dB, "
              f"bf16 takes {r['bf16_over_fp32_time']:.2f}x the fp32 time")
    print(f"wrote {cfg.output}")
    return summary


if __name__ == "__main__":
    main()
