"""What the benchmark scripts share: the model to measure (the demo model, the paper configuration with random
weights, or a folder), a best-of-N timer, and one request of Alg. 4 measured in a fresh process (seconds per
phase, the denoiser's frame-evaluations, peak memory; scripts/benchmark_infer.py). A module of the package, so a
spawned process can import it."""

from __future__ import annotations

import math
import multiprocessing
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from faceedittalker import DEMO_MODEL
from faceedittalker.data.audio import SAMPLE_RATE, load_audio
from faceedittalker.errors import InputError
from faceedittalker.pipeline import PHASES


def model_path(model: str | None, cache_dir: Path) -> tuple[str, Path]:
    """(name, folder) of the model to measure: null = the demo model, `paper` = the paper configuration with
    random weights (built once under `cache_dir`: delete it after changing the paper recipes), or a model folder."""
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


def best_seconds(fn: Callable[[], object], repeats: int, warmup: Callable[[], object] | None = None) -> float:
    """The fastest of `repeats` timed calls of `fn`, after one untimed call of `warmup` (default: `fn`) that
    pays for the allocator and the kernels' first-call setup."""
    (warmup or fn)()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since start or the last reset) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return math.nan


def repeated_speech(path: Path, seconds: float) -> np.ndarray:
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
    pipe = FaceEditTalkerPipeline.from_pretrained(run["model_path"], device=device, upsample=run.get("upsample", True))
    model = pipe.video_model
    if run.get("invert_steps"):
        model.invert_steps = int(run["invert_steps"])
    evaluated = {"frames": 0}

    def count(module, args):
        sample = args[0]
        evaluated["frames"] += sample.shape[0] * (sample.shape[1] if sample.dim() == 5 else 1)

    model.unet.register_forward_pre_hook(count)
    evaluated["inversion"] = 0

    def counted_apart(fn: Callable) -> Callable:
        """The reference's evaluations, counted apart from the frames': its inversion and, when the edited
        reference is animated (`edit_reference`), the edited still and its second inversion."""
        def counted(*args, **kwargs):
            before = evaluated["frames"]
            result = fn(*args, **kwargs)
            evaluated["inversion"] += evaluated["frames"] - before
            return result
        return counted

    model.encode_reference = counted_apart(model.encode_reference)
    pipe.edited_reference = counted_apart(pipe.edited_reference)
    waveform = repeated_speech(Path(settings["audio"]), run["seconds"])
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
                      paste_back=not keep, progress=False, edit_reference=run.get("edit_reference"))  # fmt: skip
    frames = result.num_frames
    report = {
        **{k: run.get(k) for k in ("name", "seconds", "precision", "frames")},
        "num_frames": frames, "face_size": pipe.resolution, "device": str(device), "threads": torch.get_num_threads(),
        "steps": run.get("steps") or model.sample_steps, "invert_steps": model.invert_steps,
        "edit_reference": pipe.edit_reference if run.get("edit_reference") is None else run["edit_reference"],
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
