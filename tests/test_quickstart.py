"""scripts/quickstart.py's plan: every stage in order, the shortened budgets, skipping what is done (the
commands are recorded instead of run; the stages themselves are tested in test_train / test_stage3)."""

from __future__ import annotations

import subprocess

import numpy as np
from helpers import run_script_main
from PIL import Image

from faceedittalker.synthetic.sets import held_out_portrait


def recorded_commands(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []

    def run(command, **_):
        calls.append([part.rsplit("/", 1)[-1] if i == 1 else part for i, part in enumerate(command)][1:])
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", run)
    return calls


def test_quickstart_runs_every_step_with_its_budget_and_skips_what_is_done(monkeypatch, tmp_path):
    calls = recorded_commands(monkeypatch)
    assert run_script_main(monkeypatch, "quickstart.py", f"output={tmp_path}") == 0
    scripts = [call[0] for call in calls]
    assert scripts == ["train.py"] * 5 + ["export_model.py", "make_upsampler_pairs.py", "train.py", "export_model.py",
                                          "infer.py"]  # fmt: skip
    by_stage = {call[1].removeprefix("experiment=tiny/").removesuffix("_v"): call for call in calls[:5]}
    assert list(by_stage) == ["stage1", "stage2", "landmarks", "stage3", "upsampler"]
    # The face upsampler (32 px -> 128 px), on a shorter budget than its recipe's, goes into the model folder ...
    assert "trainer.max_steps=600" in by_stage["upsampler"]
    assert f"upsampler={tmp_path / 'upsampler' / 'export'}" in calls[5]
    # ... then the model draws 8 clips of pairs, the upsampler is refined on them from itself and replaces the first.
    model, pairs = tmp_path / "model", tmp_path / "upsampler_pairs"
    assert {f"model={model}", f"output={pairs}", "clips=8", "overwrite=true"} <= set(calls[6])
    assert calls[7][1] == "experiment=tiny/upsampler_refine" and "trainer.max_steps=300" in calls[7]
    assert {f"stage0.upsampler.pairs={pairs}", f"stage0.upsampler.init={tmp_path / 'upsampler' / 'export'}",
            f"hydra.run.dir={tmp_path / 'upsampler_refine'}"} <= set(calls[7])  # fmt: skip
    assert calls[8][1:] == [f"model={model}", f"upsampler={tmp_path / 'upsampler_refine' / 'export'}"]
    assert by_stage["stage1"][1] == "experiment=tiny/stage1_v"  # the v-MSE stage 1, whose z_sem edits
    assert "trainer.max_steps=300" in by_stage["stage3"] and "trainer.max_steps=1000" in by_stage["landmarks"]
    assert "trainer.max_steps=1000" in by_stage["stage1"]
    # The demo model's sampler: UniPC-3 on the trailing grid (stage 1's diffusion block), a 100-step inversion.
    assert {"diffusion.solver=unipc", "diffusion.timestep_spacing=trailing"} <= set(by_stage["stage1"])
    assert "sampling.invert_steps=100" in by_stage["stage3"]
    assert {"edit_guidance=1.0", "edit_region=true"} <= set(calls[5])  # the demo model's edit defaults
    assert not any(arg.startswith("trainer.max_steps") for arg in by_stage["stage2"])
    assert f"stage3.feature_space={tmp_path / 'stage1' / 'export'}" in by_stage["stage3"]
    assert f"output={tmp_path / 'quickstart.mp4'}" in calls[-1] and "edit=Blond_Hair" in calls[-1]
    assert Image.open(tmp_path / "portrait.png").size == (256, 256)  # the held-out face the video is made from
    assert sorted(p.name for p in (tmp_path / ".done").iterdir()) == sorted(
        [*by_stage, "model", "upsampler_pairs", "upsampler_refine", "model_upsampler", "video"])

    calls.clear()  # everything done: a second run runs nothing
    assert run_script_main(monkeypatch, "quickstart.py", f"output={tmp_path}") == 0
    assert calls == []


def test_quickstart_budgets_can_be_the_recipes_own(monkeypatch, tmp_path):
    calls = recorded_commands(monkeypatch)
    assert run_script_main(monkeypatch, "quickstart.py", f"output={tmp_path}", "max_steps.stage3=null",
                           "max_steps.landmarks=null", "max_steps.upsampler=null", "max_steps.upsampler_refine=null",
                           "max_steps.stage1=50") == 0  # fmt: skip
    train = [call for call in calls if call[0] == "train.py"]
    assert [arg for call in train for arg in call if arg.startswith("trainer.max_steps")] == ["trainer.max_steps=50"]


def test_quickstart_portrait_lacks_the_attribute_it_adds_and_has_the_one_it_removes(monkeypatch, tmp_path):
    recorded_commands(monkeypatch)
    for alpha, has_it in ((0.5, False), (-0.5, True)):
        out = tmp_path / f"alpha{alpha}"
        assert run_script_main(monkeypatch, "quickstart.py", f"output={out}", "edit=Blond_Hair", f"alpha={alpha}") == 0
        expected, identity = held_out_portrait(index=0, size=256, Eyeglasses=False, Blond_Hair=has_it)
        assert identity.attributes["Blond_Hair"] is has_it and not identity.attributes["Eyeglasses"]
        assert np.array_equal(np.asarray(Image.open(out / "portrait.png").convert("RGB")), expected)


def test_quickstart_at_128px_trains_the_vae_first_and_hands_it_to_every_image_stage(monkeypatch, tmp_path):
    calls = recorded_commands(monkeypatch)
    assert run_script_main(monkeypatch, "quickstart.py", f"output={tmp_path}", "quickstart=tiny_latent") == 0
    train = {call[1].removeprefix("experiment="): call for call in calls if call[0] == "train.py"}
    assert list(train) == ["tiny_latent/autoencoder", "tiny_latent/stage1", "tiny_latent/stage2", "tiny/landmarks",
                           "tiny_latent/stage3"]  # fmt: skip
    vae = f"autoencoder.pretrained={tmp_path / 'stage0' / 'export' / 'autoencoder'}"
    assert [vae in call for call in train.values()] == [False, True, True, False, True]
    assert "trainer.max_steps=1500" in train["tiny_latent/autoencoder"]
    assert "trainer.max_steps=300" in train["tiny_latent/stage3"]
    assert not any(arg.startswith("diffusion.") for call in train.values() for arg in call)  # in the recipes
    assert sorted(p.name for p in (tmp_path / ".done").iterdir()) == ["landmarks", "model", "stage0", "stage1",
                                                                      "stage2", "stage3", "video"]  # fmt: skip
