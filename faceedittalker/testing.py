"""Tiny randomly initialised models, for tests and smoke runs of the whole of Alg. 4 in seconds on a CPU.

`build_random_exports(root)` writes what the three stage runs export (stage-3 video, stage-3 landmarks, stage 2),
with random weights at 32 px in pixel space (identity autoencoder) and log-mel audio; `build_random_model(output)`
assembles them into one model folder with `assemble_model`, as `scripts/export_model.py` does with real runs.
The weights are perturbed away from their zero initialisations, so every path (z_sem, F, the temporal layers,
P_ldm's head) reaches the output and a test can see it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from faceedittalker.diffusion import DDIM
from faceedittalker.models.attributes import AttributeClassifier
from faceedittalker.models.audio_encoder import MelFeatureEncoder
from faceedittalker.models.autoencoder import IdentityAutoencoder
from faceedittalker.models.landmark_encoder import LandmarkEncoder
from faceedittalker.models.landmark_predictor import LandmarkPredictor
from faceedittalker.models.semantic_encoder import SemanticEncoder
from faceedittalker.models.talking_head import TalkingHeadModel
from faceedittalker.models.unet import ConditionalUNet
from faceedittalker.pipeline import assemble_model
from faceedittalker.stages.stage3_landmarks import AUDIO_ENCODER_FILE
from faceedittalker.training.checkpoint import write_json_atomic

TINY_ATTRIBUTES = ("Eyeglasses", "Smiling", "Male", "Young", "Blond_Hair")


def _perturb(module: torch.nn.Module, scale: float, generator: torch.Generator) -> None:
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


def random_talking_head(resolution: int = 32, z_dim: int = 8, num_frames: int = 8, seed: int = 0,
                        sample_steps: int = 2, invert_steps: int = 2) -> TalkingHeadModel:
    """A random stage-3 video model in pixel space: E_sem, video eps_theta with temporal layers, E_ldm."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    image_unet = ConditionalUNet(
        in_channels=3, out_channels=3, sample_size=resolution, base_channels=8, channel_mult=(1, 2),
        layers_per_block=1, attention_resolutions=(), attention_head_dim=8, norm_num_groups=4, dropout=0.0,
        time_embed_dim=16, z_dim=z_dim, zsem_cross_attention=False, zsem_adagn=True,
    )  # fmt: skip
    # Temporal layers on the lower level only, and E_ldm without reference attention (Table V III): seconds on a CPU.
    unet = ConditionalUNet.inflate(image_unet, temporal_layers=True, cond_channels=2, temporal_max_frames=num_frames,
                                   temporal_heads=2, temporal_resolutions=(resolution // 2,))  # fmt: skip
    landmark_encoder = LandmarkEncoder(image_size=resolution, latent_size=resolution, stem_channels=(8, 16),
                                       cond_channels=2, residual_channels=unet.residual_channels,
                                       reference_cross_attention=False, norm_num_groups=4)  # fmt: skip
    semantic = SemanticEncoder(image_size=resolution, base_channels=8, channel_mult=(1, 2), layers_per_block=1,
                               attention_resolutions=(), attention_head_dim=8, norm_num_groups=4,
                               z_dim=z_dim)  # fmt: skip
    _perturb(unet, 0.02, generator)
    _perturb(landmark_encoder, 0.02, generator)
    return TalkingHeadModel(IdentityAutoencoder(), semantic, unet, landmark_encoder, DDIM(), resolution, resolution,
                            num_frames=num_frames, window_overlap=2, sample_steps=sample_steps,
                            invert_steps=invert_steps).eval()  # fmt: skip


def random_landmark_predictor(audio_dim: int = 80, seed: int = 0) -> LandmarkPredictor:
    """A random P_ldm whose head is no longer zero: the mouth moves (a little) with the audio."""
    torch.manual_seed(seed)
    predictor = LandmarkPredictor(audio_dim=audio_dim, hidden_dim=32, num_scales=2, blocks_per_scale=1,
                                  kernel_size=3, dropout=0.0, norm_group_channels=8)  # fmt: skip
    _perturb(predictor.head, 2e-3, torch.Generator().manual_seed(seed + 1))
    return predictor.eval()


def random_attribute_library(z_dim: int = 8, names: tuple[str, ...] = TINY_ATTRIBUTES,
                             seed: int = 0) -> AttributeClassifier:
    torch.manual_seed(seed)
    library = AttributeClassifier(names=list(names), z_dim=z_dim)
    library.set_statistics(torch.randn(64, z_dim, generator=torch.Generator().manual_seed(seed)))
    return library.eval()


def build_random_exports(root: str | Path, resolution: int = 32, seed: int = 0) -> tuple[Path, Path, Path]:
    """The three stage exports (video, landmarks, attributes) under `root`, as the stage runs write them."""
    root = Path(root)
    video, landmarks, attributes = root / "video", root / "landmarks", root / "attributes"
    random_talking_head(resolution, seed=seed).save_pretrained(video, atomic=False)
    encoder = MelFeatureEncoder(n_mels=80)
    random_landmark_predictor(encoder.dim, seed).save_pretrained(landmarks / "landmark_predictor")
    write_json_atomic(landmarks / AUDIO_ENCODER_FILE, encoder.describe())
    random_attribute_library(seed=seed).save_pretrained(attributes / "attribute_classifier")
    return video, landmarks, attributes


def build_random_model(output: str | Path, resolution: int = 32, seed: int = 0, overwrite: bool = False) -> Path:
    """A complete tiny random model folder at `output` (exports written beside it in a scratch folder)."""
    with tempfile.TemporaryDirectory() as scratch:
        video, landmarks, attributes = build_random_exports(scratch, resolution, seed)
        return assemble_model(video, landmarks, output, attributes=attributes, overwrite=overwrite)


def build_paper_model(output: str | Path, overrides: tuple[str, ...] = (), overwrite: bool = False) -> Path:
    """A model folder of the paper's configuration (`experiment=paper/...`: 512 px, SD-VAE latents, DiffAE-size
    E_sem and eps_theta with temporal layers, E_ldm variant IV, wav2vec2-base P_ldm) with random weights, built
    offline, for benchmarks of speed and memory. The VAE and wav2vec2 are written beside it (`<output>.parts`)."""
    from diffusers import AutoencoderKL
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from faceedittalker import CONFIGS_DIR
    from faceedittalker.data.attributes import CELEBA_ATTRIBUTES
    from faceedittalker.models.audio_encoder import AudioFeatureEncoder
    from faceedittalker.models.autoencoder import SD_VAE_CONFIG
    from faceedittalker.stages.stage1 import Stage1

    output = Path(output)
    parts = output.with_name(output.name + ".parts")
    torch.manual_seed(0)
    AutoencoderKL(**SD_VAE_CONFIG).save_pretrained(parts / "vae")
    Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(parts / "wav2vec2")  # wav2vec2-base's architecture
    # paper/stage3 carries paper/stage1's modules and the video settings (windows, generation steps).
    overrides = ["experiment=paper/stage3", f"autoencoder.pretrained={parts / 'vae'}", *overrides]
    if GlobalHydra.instance().is_initialized():  # called from a Hydra script: its config search path is ours
        cfg = compose(config_name="train", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(CONFIGS_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
    stage = Stage1(cfg)
    modules = stage.build_modules()
    image_unet, semantic, autoencoder = (modules.trainable["unet"], modules.trainable["semantic_encoder"],
                                         modules.frozen["autoencoder"])  # fmt: skip
    video, encoder_cfg = cfg.stage3.video, OmegaConf.to_container(cfg.landmark_encoder, resolve=True)
    multiscale = encoder_cfg.pop("multiscale")
    unet = ConditionalUNet.inflate(image_unet, cond_channels=encoder_cfg["cond_channels"], temporal_layers=True,
                                   **OmegaConf.to_container(video.temporal, resolve=True))  # fmt: skip
    landmark_size = video.landmark_image_size or cfg.resolution
    landmark_encoder = instantiate(encoder_cfg, _convert_="all", image_size=landmark_size,
                                   latent_size=cfg.resolution // autoencoder.downsample_factor,
                                   residual_channels=unet.residual_channels if multiscale else [])  # fmt: skip
    model = TalkingHeadModel(autoencoder, semantic, unet, landmark_encoder, stage.diffusion, cfg.resolution,
                             landmark_size, num_frames=video.num_frames, window_overlap=video.window_overlap,
                             sample_steps=cfg.sampling.sample_steps, invert_steps=cfg.sampling.invert_steps)
    audio = AudioFeatureEncoder(parts / "wav2vec2")
    predictor = instantiate(cfg.landmark_predictor, _convert_="all", audio_dim=audio.dim)
    with tempfile.TemporaryDirectory() as scratch:
        exports = Path(scratch)
        model.save_pretrained(exports / "video", atomic=False)
        predictor.save_pretrained(exports / "landmarks" / "landmark_predictor")
        write_json_atomic(exports / "landmarks" / AUDIO_ENCODER_FILE, audio.describe())
        library = AttributeClassifier(names=list(CELEBA_ATTRIBUTES), z_dim=semantic.config.z_dim)
        library.save_pretrained(exports / "attributes" / "attribute_classifier")
        return assemble_model(exports / "video", exports / "landmarks", output, attributes=exports / "attributes",
                              overwrite=overwrite, copy_vae=False)  # fmt: skip  (the 335 MB VAE stays beside it)
