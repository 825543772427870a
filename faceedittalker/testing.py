"""Tiny randomly initialised models, for tests and smoke runs of the whole of Alg. 4 in seconds on a CPU.

`build_random_exports(root)` writes what the three stage runs export (stage-3 video, stage-3 landmarks, stage 2),
with random weights at 32 px in pixel space (identity autoencoder) and log-mel audio; `build_random_model(output)`
assembles them into one model folder with `assemble_model`, as `scripts/export_model.py` does with real runs.
The weights are perturbed away from their zero initialisations, so every path (z_sem, F, the temporal layers,
P_ldm's head) reaches the output and a test can see it.
"""

from __future__ import annotations

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
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        video, landmarks, attributes = build_random_exports(scratch, resolution, seed)
        return assemble_model(video, landmarks, output, attributes=attributes, overwrite=overwrite)
