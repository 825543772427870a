"""Speed and memory of Alg. 4: seconds per generated frame by phase (reference, audio + P_ldm, denoising,
decoding, writing), the denoiser's frame-evaluations per frame, peak memory, fp32 vs bf16 (PSNR between them).

    python scripts/benchmark_infer.py                                       # the CPU table of the README
    python scripts/benchmark_infer.py --config-name benchmark_infer_gpu     # the paper configuration on a GPU

Every run is a fresh process, so its peak memory is its own: peak RSS on the CPU (and the peak over the loaded
model, VmHWM reset just before the request), `torch.cuda.max_memory_allocated` on CUDA. Keys:
faceedittalker/configs/benchmark_infer.yaml. Writes a JSON and prints Markdown tables.
"""

from __future__ import annotations

import math
import multiprocessing
import tempfile
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from faceedittalker import CONFIGS_DIR, DEMO_MODEL, DEMO_PORTRAIT, DEMO_SPEECH
from faceedittalker.cli.options import resolve_device
from faceedittalker.data.audio import SAMPLE_RATE, load_audio
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.metrics.image import psnr
from faceedittalker.pipeline import PHASES
from faceedittalker.utils.files import write_json_atomic


def _rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since start or the last reset) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return math.nan


def _speech(path: Path, seconds: float) -> np.ndarray:
    """`seconds` of speech: the file repeated as often as needed (16 kHz mono)."""
    waveform = load_audio(path)
    repeats = math.ceil(seconds * SAMPLE_RATE / len(waveform))
    return np.tile(waveform, repeats)[: round(seconds * SAMPLE_RATE)]


def measure(run: dict, settings: dict) -> dict:
    """One run in this (fresh) process: load, count the denoiser's frames, generate, report."""
    from faceedittalker.pipeline import FaceEditTalkerPipeline

    if settings["threads"]:
        torch.set_num_threads(settings["threads"])
    device = torch.device(settings["device"])
    pipe = FaceEditTalkerPipeline.from_pretrained(run["model_path"], device=device)
    model = pipe.video_model
    if run.get("invert_steps"):
        model.invert_steps = int(run["invert_steps"])
    evaluated = {"frames": 0}

    def count(module, args):
        sample = args[0]
        evaluated["frames"] += sample.shape[0] * (sample.shape[1] if sample.dim() == 5 else 1)

    model.unet.register_forward_pre_hook(count)
    encode_reference = model.encode_reference

    def counted_reference(*args, **kwargs):  # the inversion's evaluations, counted apart
        before = evaluated["frames"]
        result = encode_reference(*args, **kwargs)
        evaluated["inversion"] = evaluated["frames"] - before
        return result

    model.encode_reference = counted_reference
    waveform = _speech(Path(settings["audio"]), run["seconds"])
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak of the request alone
    loaded_mb = _rss_mb("VmRSS")
    with tempfile.TemporaryDirectory() as scratch:
        keep = bool(run.get("frames"))
        result = pipe(settings["ref"], waveform, edit="Eyeglasses", alpha=0.8, steps=run.get("steps"),
                      precision=run["precision"], output=None if keep else Path(scratch) / "video.mp4",
                      paste_back=not keep, progress=False)  # fmt: skip
    frames = result.num_frames
    report = {
        **{k: run.get(k) for k in ("name", "seconds", "precision", "frames")},
        "num_frames": frames, "device": str(device), "threads": torch.get_num_threads(),
        "steps": run.get("steps") or model.sample_steps, "invert_steps": model.invert_steps,
        "seconds_per_frame": {phase: result.timings[phase] / frames for phase in PHASES},
        "total_seconds": sum(result.timings.values()),
        "evaluations_per_frame": (evaluated["frames"] - evaluated["inversion"]) / frames,  # measured
        "inversion_evaluations": evaluated["inversion"],
        "default_evaluations_per_frame": model.evaluations_per_frame(frames),
    }  # fmt: skip
    evaluations = frames * report["evaluations_per_frame"]
    report["denoising_seconds_per_evaluation"] = result.timings["denoising"] / evaluations
    if device.type == "cuda":
        report["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        report["peak_memory_mb"] = _rss_mb("VmHWM")  # the whole process during the request
        report["peak_over_loaded_mb"] = report["peak_memory_mb"] - loaded_mb
    if keep:
        report["crops"] = result.frames  # (T, R, R, 3) uint8, taken out before the JSON is written
    return report


def _child(queue, run: dict, settings: dict) -> None:
    try:
        queue.put(measure(run, settings))
    except BaseException as err:  # reported by the parent, which goes on with the other runs
        queue.put({"error": f"{type(err).__name__}: {err}"})


def run_isolated(run: dict, settings: dict) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, run, settings))
    process.start()
    report = queue.get()
    process.join()
    if "error" in report:
        raise InputError(f"run {run['name']} ({run['seconds']} s, {run['precision']}) failed: {report['error']}")
    return report


def model_path(model: str | None, cache_dir: Path) -> tuple[str, Path]:
    if model is None:
        return "demo", DEMO_MODEL
    if model == "paper":
        from faceedittalker.testing import build_paper_model

        folder = cache_dir / "paper_model"
        if not (folder / "model_index.json").is_file():
            print(f"building the paper configuration with random weights in {folder} (once) ...", flush=True)
            build_paper_model(folder, overwrite=True)
        return "paper (random weights)", folder
    if not Path(model).is_dir():
        raise InputError(f"model folder not found: {model}")
    return Path(model).name, Path(model)


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
        lines.append(f"| {r['name']} | {r['seconds']} s ({r['num_frames']} frames) | {r['precision']} | {r['steps']} "
                     f"| {r['evaluations_per_frame']:.2f} | " + " | ".join(cells) + f" | {total} | {peak} |")
    return "\n".join(lines)


@hydra.main(config_path=str(CONFIGS_DIR), config_name="benchmark_infer", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> dict:
    settings = {"device": resolve_device(cfg.device), "threads": cfg.threads,
                "ref": str(Path(cfg.ref or DEMO_PORTRAIT).expanduser()),
                "audio": str(Path(cfg.audio or DEMO_SPEECH).expanduser())}  # fmt: skip
    runs = OmegaConf.to_container(cfg.runs)
    reports = []
    for run in runs:
        run["name"], run["model_path"] = model_path(run.get("model"), Path(cfg.cache_dir))
        print(f"{run['name']}: {run['seconds']} s of speech, {run['precision']} ...", flush=True)
        reports.append(run_isolated(run, settings))
    # Peak memory against the length, and bf16 against fp32, between runs that differ only in that.
    ratios, agreement = [], []
    for a in reports:
        for b in reports:
            same = all(a[k] == b[k] for k in ("name", "precision", "steps", "invert_steps", "frames"))
            if same and b["seconds"] > a["seconds"] and not a["frames"]:
                ratios.append({"name": a["name"], "precision": a["precision"], "seconds": [a["seconds"], b["seconds"]],
                               "peak_memory_ratio": b["peak_memory_mb"] / a["peak_memory_mb"]})  # fmt: skip
            if (a["frames"] and b["frames"] and a["precision"] == "fp32" and b["precision"] == "bf16"
                    and all(a[k] == b[k] for k in ("name", "seconds", "steps", "invert_steps"))):  # fmt: skip
                dB = psnr(torch.from_numpy(b["crops"]).permute(0, 3, 1, 2).float() / 127.5 - 1,
                          torch.from_numpy(a["crops"]).permute(0, 3, 1, 2).float() / 127.5 - 1)  # fmt: skip
                agreement.append({"name": a["name"], "seconds": a["seconds"], "bf16_vs_fp32_psnr_db": float(dB.mean()),
                                  "bf16_over_fp32_time": b["total_seconds"] / a["total_seconds"]})  # fmt: skip
    for report in reports:
        report.pop("crops", None)
    summary = {"runs": reports, "memory_vs_length": ratios, "bf16_vs_fp32": agreement}
    write_json_atomic(cfg.output, summary)
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
