"""The benchmark scripts measure what they say: frame-evaluations counted in the denoiser equal the model's
figure, every phase is timed, memory is reported per run, and steps are compared with a many-step render.
(Speed itself is measured by the scripts, never asserted by a test.)"""

from __future__ import annotations

import json
import math

import pytest
from helpers import run_script_main

from faceedittalker.pipeline import PHASES, FaceEditTalkerPipeline


def test_pipeline_reports_seconds_per_phase(tiny_model, short_speech, tmp_path):
    from media_fixtures import ASTRONAUT_PATH

    pipe = FaceEditTalkerPipeline.from_pretrained(tiny_model)
    result = pipe(ASTRONAUT_PATH, short_speech, output=tmp_path / "v.mp4", progress=False)
    assert set(result.timings) == set(PHASES)
    assert all(seconds > 0 for seconds in result.timings.values()), result.timings


def test_benchmark_infer_counts_evaluations_and_compares_precisions(monkeypatch, tiny_model, tmp_path):
    output = tmp_path / "bench.json"
    runs = (f"runs=[{{model: {tiny_model}, seconds: 0.72, precision: fp32, frames: true}},"
            f"{{model: {tiny_model}, seconds: 0.72, precision: bf16, frames: true}},"
            f"{{model: {tiny_model}, seconds: 0.4, precision: fp32}},"
            f"{{model: {tiny_model}, seconds: 1.2, precision: fp32}},"
            f"{{model: {tiny_model}, seconds: 0.4, precision: fp32, edit_reference: true}}]")
    assert run_script_main(monkeypatch, "benchmark_infer.py", runs, f"output={output}", "threads=1") == 0
    report = json.loads(output.read_text())
    short, _, mid, long, anchored = report["runs"]
    assert (short["num_frames"], mid["num_frames"], long["num_frames"]) == (18, 10, 30)
    model = FaceEditTalkerPipeline.from_pretrained(tiny_model).video_model  # windows of 8, overlap 2, 2 steps
    for run in report["runs"]:
        # Counted by a hook on the denoiser, equal to the model's own figure; the inversion counted apart.
        assert run["evaluations_per_frame"] == pytest.approx(model.evaluations_per_frame(run["num_frames"]))
        # With the edited reference animated, the reference also pays for the edited still and its inversion
        # (the tiny model's edits are unguided and global: one pass each).
        anchor = (model.sample_steps + model.invert_steps) * model.num_frames if run["edit_reference"] else 0
        assert run["inversion_evaluations"] == model.invert_steps * model.num_frames + anchor
        assert set(run["seconds_per_frame"]) == set(PHASES) and run["seconds_per_frame"]["denoising"] > 0
        assert run["peak_memory_mb"] > 100 and run["peak_over_loaded_mb"] >= 0
    # Kept frames are appended to a list (no encoder); a written video pays for H.264 + AAC.
    assert short["seconds_per_frame"]["writing"] < 1e-3 < long["seconds_per_frame"]["writing"]
    assert [r["edit_reference"] for r in report["runs"]] == [False] * 4 + [True]  # the model's default, then asked
    (ratio,) = [r for r in report["memory_vs_length"] if r["seconds"] == [0.4, 1.2]]  # not against `anchored`
    assert ratio["peak_memory_ratio"] == pytest.approx(long["peak_memory_mb"] / mid["peak_memory_mb"])
    (agreement,) = report["bf16_vs_fp32"]
    assert 15 < agreement["bf16_vs_fp32_psnr_db"] < 200  # close, and not the same run compared with itself


def test_benchmark_steps_compares_samplers_with_a_many_step_render(monkeypatch, tiny_model, tmp_path):
    output = tmp_path / "steps.json"
    samplers = "samplers=[{solver: unipc, timestep_spacing: trailing, invert_steps: 5}]"
    assert run_script_main(monkeypatch, "benchmark_steps.py", f"model={tiny_model}", "steps=[1,3]",
                           "reference_steps=5", "seconds=0.4", samplers, f"output={output}") == 0  # fmt: skip
    report = json.loads(output.read_text())
    assert report["num_frames"] == 10 and [r["steps"] for r in report["rows"]] == [1, 3]
    assert [(r["solver"], r["invert_steps"]) for r in report["rows"]] == [("unipc", 5)] * 2
    # From the reference's own Z_T (the same trailing 5-step inversion) the solver closes in on its render.
    one, three = report["rows"]
    assert three["evaluations_per_frame"] == pytest.approx(3 * one["evaluations_per_frame"])
    assert 0 < one["psnr_to_reference_db"] < three["psnr_to_reference_db"]  # more steps, closer to the reference
    round_trips = [r["round_trip_psnr_db"] for r in report["rows"]] + [report["reference_round_trip_psnr_db"]]
    assert all(0 < db and math.isfinite(db) for db in round_trips)
    assert run_script_main(monkeypatch, "benchmark_steps.py", f"model={tiny_model}", "steps=[8]",
                           "reference_steps=6", f"output={tmp_path / 'x.json'}") == 2  # fmt: skip
    assert not (tmp_path / "x.json").exists()


def test_benchmark_peer_charges_each_method_its_evaluations(monkeypatch, tiny_model, tmp_path):
    import diffusers

    import faceedittalker.benchmark as benchmark

    # The paper model and AniPortrait's UNet take minutes here: the tiny model and a tiny UNetMotionModel stand in.
    monkeypatch.setattr(benchmark, "model_path", lambda model, cache_dir: ("tiny", tiny_model))
    motion_unet = diffusers.UNetMotionModel
    tiny_peer = lambda **kwargs: motion_unet(  # noqa: E731
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, num_attention_heads=2,
        motion_num_attention_heads=2, down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
        up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion"), cross_attention_dim=kwargs["cross_attention_dim"])
    monkeypatch.setattr(diffusers, "UNetMotionModel", tiny_peer)
    output = tmp_path / "peer.json"
    assert run_script_main(monkeypatch, "benchmark_peer.py", "frames=2", "decode=false", f"json={output}") == 0
    report = json.loads(output.read_text())
    ours, peer = report["ours"], report["peer"]
    model = FaceEditTalkerPipeline.from_pretrained(tiny_model).video_model
    assert report["video_frames"] == 200 and ours["evaluations_per_frame"] == model.evaluations_per_frame(200)
    assert ours["inversion_evaluations"] == model.invert_steps * model.num_frames
    assert peer["evaluations_per_frame"] == 50  # 25 steps x classifier-free guidance
    expected = ours["seconds_per_evaluation"] * (ours["evaluations_per_frame"] + ours["inversion_evaluations"] / 200)
    assert ours["denoising_seconds_per_frame"] == pytest.approx(expected)
    assert peer["denoising_seconds_per_frame"] == pytest.approx(50 * peer["seconds_per_evaluation"])
    assert report["denoising_ratio"] == pytest.approx(peer["denoising_seconds_per_frame"]
                                                      / ours["denoising_seconds_per_frame"])  # fmt: skip
    assert "total_ratio" not in report
