"""Every `experiment=` recipe composes on its own and carries its stage, target, budget, size and E_ldm variant."""

from __future__ import annotations

import pytest
from helpers import compose_train_config
from hydra import compose, initialize_config_dir

from faceedittalker import CONFIGS_DIR

# name: (stage, stage3.target, max_steps, batch_size, resolution, (E_ldm multiscale, reference cross-attention))
PAPER_LDM = (True, True)  # Table V IV, the paper's E_ldm
EXPECTED = {
    "tiny/stage1": (1, "video", 400, 8, 32, PAPER_LDM),
    "tiny/stage1_v": (1, "video", 5000, 8, 32, PAPER_LDM),  # the demo model's: plain v-MSE + AdaGN
    "tiny/stage1_face": (1, "video", 5000, 8, 32, PAPER_LDM),  # the same with the inner face weighted
    "tiny/stage2": (2, "video", 2000, 8, 32, PAPER_LDM),
    "tiny/stage3": (3, "video", 400, 2, 32, PAPER_LDM),
    "tiny/landmarks": (3, "landmarks", 1500, 16, 32, PAPER_LDM),
    "tiny/upsampler": (0, "video", 4000, 16, 128, PAPER_LDM),  # stage 0, target upsampler: 32 px -> 128 px faces
    "tiny/upsampler_refine": (0, "video", 1000, 16, 128, PAPER_LDM),  # that upsampler on a model's own frames
    "paper/stage1": (1, "video", 500000, 16, 512, PAPER_LDM),
    "paper/stage2": (2, "video", 10000, 16, 512, PAPER_LDM),
    "paper/stage3": (3, "video", 40000, 16, 512, PAPER_LDM),
    "paper/landmarks": (3, "landmarks", 40000, 16, 512, PAPER_LDM),
    "ablation/ldm_conv": (3, "video", 40000, 16, 512, (False, False)),  # Table V II
    "ablation/ldm_multiscale": (3, "video", 40000, 16, 512, (True, False)),  # III
    "ablation/ldm_multiscale_xattn": (3, "video", 40000, 16, 512, PAPER_LDM),  # IV
    "ablation/tiny_ldm_conv": (3, "video", 400, 2, 32, (False, False)),
    "ablation/tiny_ldm_multiscale": (3, "video", 400, 2, 32, (True, False)),
    "ablation/tiny_ldm_multiscale_xattn": (3, "video", 400, 2, 32, PAPER_LDM),
    "tiny_latent/autoencoder": (0, "video", 4000, 8, 128, PAPER_LDM),  # stage 0: the world's VAE
    "tiny_latent/stage1": (1, "video", 5000, 8, 128, PAPER_LDM),
    "tiny_latent/stage2": (2, "video", 2000, 8, 128, PAPER_LDM),
    "tiny_latent/stage3": (3, "video", 2500, 2, 128, PAPER_LDM),
}


def experiment_files() -> set[str]:
    root = CONFIGS_DIR / "experiment"
    return {str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml") if not p.name.startswith("_")}


def test_every_experiment_file_is_checked():
    assert experiment_files() == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_experiment_composes_with_its_recipe(name):
    stage, target, max_steps, batch_size, resolution, ldm = EXPECTED[name]
    with initialize_config_dir(config_dir=str(CONFIGS_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={name}"], return_hydra_config=True)
    assert (cfg.stage, cfg.stage3.target) == (stage, target)
    assert (cfg.trainer.max_steps, cfg.trainer.batch_size, cfg.resolution) == (max_steps, batch_size, resolution)
    assert (cfg.landmark_encoder.multiscale, cfg.landmark_encoder.reference_cross_attention) == ldm
    # Each recipe has its own default run folder, without a timestamp (every rank agrees; re-running resumes).
    assert cfg.hydra.run.dir == f"runs/{cfg.run_name}"
    family = "tiny-latent" if name.startswith("tiny_latent/") else "tiny" if "tiny" in name else "paper"
    assert cfg.run_name.startswith(family)
    # The shared base is inherited, not copied: the families differ in image space, audio features and lr.
    tiny = family.startswith("tiny")
    assert cfg.autoencoder.kind == ("identity" if family == "tiny" else "vae")
    assert cfg.audio_encoder._target_.endswith("MelFeatureEncoder" if tiny else "AudioFeatureEncoder")
    refine = name == "tiny/upsampler_refine"  # a continuation: a third of tiny's lr, from tiny/upsampler's export
    assert cfg.trainer.optimizer.lr == pytest.approx(3e-4 if refine else 1e-3 if tiny else 1e-4)
    if refine:
        assert cfg.stage0.upsampler.init == "runs/tiny-upsampler/export" and cfg.stage0.upsampler.pairs
    if family == "tiny-latent":  # the world's own VAE, which stage 0 of the family trains
        assert cfg.autoencoder.pretrained == "runs/tiny-latent-autoencoder/export/autoencoder"
    # Later stages read the stage-1 export of the same family by default.
    if stage == 2:
        assert cfg.stage2.feature_space == f"runs/{family}-stage1/export"
    if (stage, target) == (3, "video"):
        assert cfg.stage3.feature_space == f"runs/{family}-stage1/export"


def test_run_names_are_distinct():
    names = [compose_train_config([f"experiment={name}"]).run_name for name in EXPECTED]
    assert len(set(names)) == len(names)


def test_stage_on_the_command_line_is_a_plain_override():
    cfg = compose_train_config(["experiment=tiny/stage1", "stage=3", "stage3.target=landmarks"])
    assert (cfg.stage, cfg.stage3.target, cfg.resolution) == (3, "landmarks", 32)
    assert compose_train_config(["experiment=ablation/tiny_ldm_conv", "landmark_encoder=multiscale"]) \
        .landmark_encoder.multiscale is True  # a command-line group choice still wins over the recipe's


def test_the_demo_models_stage1_recipe_trains_v_with_adagn_and_a_slower_encoder():
    cfg = compose_train_config(["experiment=tiny/stage1_v"])
    tiny = compose_train_config(["experiment=tiny/stage1"])
    assert (cfg.diffusion.prediction_type, cfg.diffusion.loss_weighting) == ("v_prediction", "none")
    assert tiny.diffusion.prediction_type == "epsilon"  # tiny/stage1 keeps the paper's eps-MSE
    assert cfg.unet.zsem_adagn is True and cfg.trainer.lr_scale.semantic_encoder == 0.1
    assert cfg.unet.base_channels == tiny.unet.base_channels  # the same tiny networks otherwise


def test_the_face_weighted_stage1_recipe_is_stage1_v_with_the_inner_face_weighted():
    face = compose_train_config(["experiment=tiny/stage1_face"])
    plain = compose_train_config(["experiment=tiny/stage1_v"])
    assert face.stage1.face_loss_weight == 20 and plain.stage1.face_loss_weight == 1  # 1: Eq. 11 as written
    assert compose_train_config(["experiment=paper/stage1"]).stage1.face_loss_weight == 1
    assert face.diffusion == plain.diffusion and face.unet == plain.unet and face.trainer == plain.trainer
    assert face.run_name == "tiny-stage1-face"


def test_tiny_stage2_balances_the_classes_and_the_paper_keeps_eq_12():
    assert compose_train_config(["experiment=tiny/stage2"]).stage2.class_balanced is True
    assert compose_train_config(["experiment=paper/stage2"]).stage2.class_balanced is False


def test_tiny_stage3_weighs_the_mouth_and_the_paper_keeps_eq_13():
    assert compose_train_config(["experiment=tiny/stage3"]).stage3.video.mouth_loss_weight == 5
    assert compose_train_config(["experiment=ablation/tiny_ldm_conv"]).stage3.video.mouth_loss_weight == 5
    assert compose_train_config(["experiment=tiny_latent/stage3"]).stage3.video.mouth_loss_weight == 5
    assert compose_train_config(["experiment=paper/stage3"]).stage3.video.mouth_loss_weight == 1.0
