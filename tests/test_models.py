"""E_sem, eps_theta and E_img: shapes, conditioning paths, zero-initialised inputs, save/load round trips."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL
from helpers import assert_checkpointing_keeps_gradients

from faceedittalker.errors import InputError
from faceedittalker.models.autoencoder import IdentityAutoencoder, LatentAutoencoder, build_autoencoder
from faceedittalker.models.layers import group_count
from faceedittalker.models.semantic_encoder import SemanticEncoder
from faceedittalker.models.unet import ConditionalUNet

TINY_UNET = dict(in_channels=3, out_channels=3, sample_size=16, base_channels=16, channel_mult=(1, 2),
                 layers_per_block=1, attention_resolutions=(8,), attention_head_dim=16, norm_num_groups=4,
                 dropout=0.0, time_embed_dim=32, z_dim=24, cross_attention_dim=24, z_tokens=3)


def randomise_output(unet: ConditionalUNet) -> ConditionalUNet:
    """Zero-initialised output layers make a fresh model predict 0; give them weights to test conditioning."""
    torch.manual_seed(1)
    for module in unet.modules():
        if isinstance(module, torch.nn.Conv2d) and module.weight.abs().sum() == 0:
            torch.nn.init.normal_(module.weight, std=0.05)
    return unet


def test_semantic_encoder_maps_images_to_z_sem_at_any_input_size():
    encoder = SemanticEncoder(image_size=16, base_channels=8, channel_mult=(1, 2), layers_per_block=1,
                              attention_resolutions=(8,), attention_head_dim=8, norm_num_groups=4, z_dim=24)
    z = encoder(torch.randn(3, 3, 16, 16))
    assert z.shape == (3, 24)
    assert encoder(torch.randn(2, 3, 40, 40)).shape == (2, 24)  # resized to image_size first
    assert not torch.allclose(z[0], z[1])


@pytest.mark.parametrize("cross_attention,adagn", [(True, False), (False, True), (True, True)])
def test_unet_output_depends_on_z_sem_through_each_injection(cross_attention, adagn):
    unet = randomise_output(ConditionalUNet(**TINY_UNET, zsem_cross_attention=cross_attention,
                                            zsem_adagn=adagn)).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    z = torch.randn(2, 24)
    out = unet(x, t, z)
    assert out.shape == x.shape
    assert (out - unet(x, t, z + 1.0)).abs().mean() > 1e-4
    assert (out - unet(x, t + 100, z)).abs().mean() > 1e-4  # and on the timestep


def test_unet_rejects_a_model_without_z_sem():
    with pytest.raises(ValueError, match="z_sem"):
        ConditionalUNet(**TINY_UNET, zsem_cross_attention=False, zsem_adagn=False)


def test_landmark_feature_channels_start_at_zero_so_they_do_not_change_the_output():
    unet = randomise_output(ConditionalUNet(**TINY_UNET, cond_channels=2)).eval()
    torch.nn.init.zeros_(unet.conv_in.weight[:, 3:])
    x, z = torch.randn(1, 3, 16, 16), torch.randn(1, 24)
    a = unet(x, 5, z, cond=torch.zeros(1, 2, 16, 16))
    b = unet(x, 5, z, cond=torch.randn(1, 2, 16, 16))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="landmark-feature"):
        unet(x, 5, z)


def test_fresh_unet_predicts_zero_noise():
    # ADM/DiffAE: zero-initialised output convolutions, so training starts from eps_hat = 0.
    unet = ConditionalUNet(**TINY_UNET).eval()
    assert unet(torch.randn(1, 3, 16, 16), 3, torch.randn(1, 24)).abs().max() == 0


def test_unet_and_encoder_round_trip_through_save_pretrained(tmp_path):
    unet = randomise_output(ConditionalUNet(**TINY_UNET, zsem_adagn=True)).eval()
    unet.save_pretrained(tmp_path / "unet")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = ConditionalUNet.from_pretrained(tmp_path / "unet").eval()
    x, z = torch.randn(1, 3, 16, 16), torch.randn(1, 24)
    torch.testing.assert_close(unet(x, 7, z), loaded(x, 7, z))
    assert loaded.config.channel_mult == [1, 2] or tuple(loaded.config.channel_mult) == (1, 2)


def test_identity_autoencoder_is_pixel_space():
    ae = IdentityAutoencoder()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(ae.encode(x), x)
    assert ae.decode(x * 3).abs().max() <= 1


@pytest.fixture(scope="module")
def tiny_vae_dir(tmp_path_factory):
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, sample_size=16, scaling_factor=0.5)
    path = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(path)
    return path


def test_vae_wrapper_scales_the_posterior_mean_by_the_configured_factor(tiny_vae_dir):
    ae = build_autoencoder(kind="vae", pretrained=str(tiny_vae_dir))
    assert isinstance(ae, LatentAutoencoder)
    assert (ae.latent_channels, ae.downsample_factor, ae.scaling_factor) == (4, 2, 0.5)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (2, 4, 8, 8)
    torch.testing.assert_close(z, ae.vae.encode(x).latent_dist.mean * 0.5)
    torch.testing.assert_close(ae.encode(x), z)  # deterministic: the mean, not a sample
    assert ae.decode(z).shape == x.shape


def test_missing_vae_is_a_clear_input_error(tmp_path):
    with pytest.raises(InputError, match="VAE folder not found"):
        build_autoencoder(kind="vae", pretrained=str(tmp_path / "nope"))
    with pytest.raises(InputError, match="could not load the VAE"):
        build_autoencoder(kind="vae", pretrained=str(tmp_path))  # exists, but holds no VAE


def test_sd_vae_architecture_is_built_with_random_weights_when_asked(tmp_path):
    ae = build_autoencoder(kind="vae", pretrained=str(tmp_path / "nope"), random_init=True)
    assert ae.latent_channels == 4 and ae.downsample_factor == 8 and ae.scaling_factor == pytest.approx(0.18215)
    assert 80e6 < sum(p.numel() for p in ae.parameters()) < 86e6  # SD-VAE: 83.7M parameters


def test_vae_description_rebuilds_the_same_vae_from_any_directory(tiny_vae_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tiny_vae_dir.parent)
    ae = build_autoencoder(kind="vae", pretrained=tiny_vae_dir.name)  # a relative path
    description = ae.describe()
    assert description["pretrained"] == str(tiny_vae_dir.resolve())
    monkeypatch.chdir(tmp_path)
    again = build_autoencoder(**description)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(again.encode(x), ae.encode(x))


@pytest.mark.parametrize(
    ("channels", "max_groups", "groups"),
    [(128, 32, 32), (48, 32, 24), (40, 32, 20), (7, 32, 7), (10, 4, 2), (13, 4, 1), (64, 0, 1)],
)
def test_group_count_is_the_largest_divisor_allowed(channels, max_groups, groups):
    assert group_count(channels, max_groups) == groups
    torch.nn.GroupNorm(groups, channels)  # accepted by GroupNorm


def test_gradient_checkpointing_keeps_the_image_unet_gradients():
    unet = randomise_output(ConditionalUNet(**{**TINY_UNET, "dropout": 0.1}, zsem_adagn=True)).train()
    x, t, z = torch.randn(2, 3, 16, 16), torch.tensor([10, 500]), torch.randn(2, 24)
    assert_checkpointing_keeps_gradients(unet, lambda m: m(x, t, z).square().mean())


def test_gradient_checkpointing_keeps_the_semantic_encoder_gradients():
    encoder = SemanticEncoder(image_size=16, base_channels=8, channel_mult=(1, 2), layers_per_block=1,
                              attention_resolutions=(8,), attention_head_dim=8, norm_num_groups=4, z_dim=24)
    images = torch.randn(2, 3, 16, 16)
    assert_checkpointing_keeps_gradients(encoder, lambda m: m(images).square().mean())


@pytest.mark.slow  # 74 s on the shared 2-core machine
def test_benchmark_flops_counts_a_training_step_as_about_three_forwards(tmp_path, monkeypatch):
    import json

    from helpers import run_script_main

    out = tmp_path / "flops.json"
    code = run_script_main(monkeypatch, "benchmark_flops.py", "experiment=tiny/stage1", "resolution=64",
                           "dtypes=[fp32]", "matmul_size=256", "repeats=1", f"json={out}")
    assert code == 0
    results = json.loads(out.read_text())["results"]["fp32"]
    assert results["matmul_peak_flop_per_s"] > 0
    for model in ("ConditionalUNet (ours)", "diffusers UNet2DConditionModel"):
        forward, step = results[model]["forward"], results[model]["training_step"]
        assert 2.5 < step["flops"] / forward["flops"] < 3.5  # backward: gradients of inputs and of weights
        assert 0 < forward["share_of_peak"] and forward["flop_per_s"] == pytest.approx(
            forward["flops"] / forward["seconds"], rel=1e-3)
    assert run_script_main(monkeypatch, "benchmark_flops.py", "dtypes=[fp64]") == 2
