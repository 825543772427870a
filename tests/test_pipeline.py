"""Alg. 4 as one pipeline: the model folder, edits and ramps, and the written video (tiny random model)."""

from __future__ import annotations

import json
import math
import shutil

import av
import numpy as np
import pytest
import torch
from media_fixtures import ASTRONAUT_PATH, speech_path, write_audio

from faceedittalker import __version__
from faceedittalker.data.audio import load_audio
from faceedittalker.errors import InputError
from faceedittalker.pipeline import EditRequest, FaceEditTalkerPipeline, assemble_model, parse_edits
from faceedittalker.testing import build_random_exports


def probe(path):
    """Frames, fps, codecs and the audio duration (s) of a written video, read back with PyAV."""
    with av.open(str(path)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        frames = sum(1 for _ in container.decode(video))
        info = (video.codec_context.name, sound.codec_context.name, float(video.average_rate),
                video.codec_context.pix_fmt, (video.height, video.width))  # fmt: skip
    audio = load_audio(path)
    return frames, info, len(audio) / 16000


def test_model_folder_manifest_and_round_trip(tiny_model):
    index = json.loads((tiny_model / "model_index.json").read_text())
    assert index["_class_name"] == "FaceEditTalkerPipeline"
    assert (index["format_version"], index["faceedittalker_version"]) == (1, __version__)
    assert (index["video_model"], index["landmark_predictor"], index["attribute_library"]) == (
        "TalkingHeadModel", "LandmarkPredictor", "AttributeClassifier")  # fmt: skip
    assert index["audio_encoder"] == {"kind": "mel", "n_mels": 80, "fps": 25, "name": "logmel80"}
    pipe = FaceEditTalkerPipeline.from_pretrained(tiny_model)
    assert pipe.attribute_names[:2] == ["Eyeglasses", "Smiling"] and pipe.audio_encoder.dim == 80
    # The same model saved by the pipeline itself loads to the same weights.
    copy = tiny_model.parent / "saved"
    pipe.save_pretrained(copy, overwrite=True)
    again = FaceEditTalkerPipeline.from_pretrained(copy)
    for name, value in pipe.video_model.unet.state_dict().items():
        torch.testing.assert_close(again.video_model.unet.state_dict()[name], value)
    assert not list(copy.parent.glob(".saved*"))  # no temporary folder left


@pytest.mark.parametrize("change, message", [
    (lambda index: index.update(audio_encoder={"_target_": "os.system", "command": "touch /tmp/pwned"}),
     "os.system"),
    (lambda index: index.update(audio_encoder={"kind": "builtins.eval"}), "unknown audio encoder kind"),
    (lambda index: index.update(video_model="subprocess.Popen"), "kind 'subprocess.Popen'"),
    (lambda index: index.update(format_version=99), "format_version 99"),
])  # fmt: skip
def test_loading_never_runs_code_named_in_the_folder(tiny_model, tmp_path, change, message):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    index = json.loads((folder / "model_index.json").read_text())
    change(index)
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match=message):
        FaceEditTalkerPipeline.from_pretrained(folder)


def test_missing_or_incomplete_model_folder_is_one_clear_error(tiny_model, tmp_path):
    with pytest.raises(InputError, match="FaceEditTalker model folder not found"):
        FaceEditTalkerPipeline.from_pretrained(tmp_path / "nothing")
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    for weights in (folder / "landmark_predictor").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(InputError, match="incomplete .* no safetensors weights in landmark_predictor"):
        FaceEditTalkerPipeline.from_pretrained(folder)
    shutil.rmtree(folder / "video_model" / "unet")
    with pytest.raises(InputError, match="incomplete .*unet/config.json is missing"):
        FaceEditTalkerPipeline.from_pretrained(folder)


def test_model_without_attribute_library_generates_but_refuses_edits(tiny_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    shutil.rmtree(folder / "attribute_library")
    pipe = FaceEditTalkerPipeline.from_pretrained(folder)
    assert pipe.attribute_library is None
    with pytest.raises(InputError, match="no attribute library"):
        pipe(ASTRONAUT_PATH, speech_path(), edit="Eyeglasses", alpha=0.5)


def test_export_assembles_atomically_and_names_what_is_missing(tmp_path):
    video, landmarks, attributes = build_random_exports(tmp_path / "runs")
    model = assemble_model(video, landmarks, tmp_path / "models" / "a", attributes=attributes)
    assert sorted(p.name for p in model.iterdir()) == ["attribute_library", "landmark_predictor", "model_index.json",
                                                        "video_model"]  # fmt: skip
    assert FaceEditTalkerPipeline.from_pretrained(model).edit_guidance == 0.0  # the paper's edit by default
    assert FaceEditTalkerPipeline.from_pretrained(model).edit_guidance_interval == (0.0, 1.0)  # every step
    assert FaceEditTalkerPipeline.from_pretrained(model).edit_reference is False
    guided = assemble_model(video, landmarks, tmp_path / "guided", attributes=attributes, edit_guidance=1.5,
                            edit_region=True, edit_guidance_interval=[0, 0.5], edit_reference=True)  # fmt: skip
    pipe = FaceEditTalkerPipeline.from_pretrained(guided)
    assert (pipe.edit_guidance, pipe.edit_region, pipe.edit_guidance_interval) == (1.5, True, (0.0, 0.5))
    assert pipe.edit_reference is True
    assert json.loads((guided / "model_index.json").read_text())["edit_guidance_interval"] == [0.0, 0.5]
    with pytest.raises(InputError, match="edit_guidance must be a number in"):
        assemble_model(video, landmarks, tmp_path / "models" / "c", edit_guidance=-1)
    for interval in ([0.5, 0.2], [0, 1.5], [0.5], 0.5, "0,1", [True, 1]):
        with pytest.raises(InputError, match=r"edit_guidance_interval must be \[lo, hi\] with 0 <= lo < hi <= 1"):
            assemble_model(video, landmarks, tmp_path / "models" / "d", edit_guidance_interval=interval)
    assert not (tmp_path / "models" / "c").exists() and not (tmp_path / "models" / "d").exists()
    with pytest.raises(InputError, match="exists already"):
        assemble_model(video, landmarks, model)
    (landmarks / "audio_encoder.json").unlink()
    with pytest.raises(InputError, match="no audio_encoder.json"):
        assemble_model(video, landmarks, tmp_path / "models" / "b")
    with pytest.raises(InputError, match="not a stage-3 video model folder"):
        assemble_model(landmarks, landmarks, tmp_path / "models" / "b")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["a"]  # nothing half-written


def test_model_folder_carries_its_local_vae_and_loads_without_the_original(tmp_path):
    from faceedittalker.models.autoencoder import LatentAutoencoder
    from faceedittalker.stages.stage0_autoencoder import build_small_vae

    torch.manual_seed(0)  # a VAE without downsampling and 3 latent channels fits the random pixel-space video model
    vae_dir = tmp_path / "stage0" / "export" / "autoencoder"
    build_small_vae(32, [8], latent_channels=3, norm_num_groups=4).save_pretrained(vae_dir)
    video, landmarks, attributes = build_random_exports(tmp_path / "runs")
    settings = json.loads((video / "talking_head.json").read_text())
    settings["autoencoder"] = {"kind": "vae", "pretrained": str(vae_dir), "subfolder": None}
    (video / "talking_head.json").write_text(json.dumps(settings))

    referenced = assemble_model(video, landmarks, tmp_path / "models" / "ref", copy_vae=False)
    assert not (referenced / "video_model" / "autoencoder").exists()
    model = assemble_model(video, landmarks, tmp_path / "models" / "own", attributes=attributes)
    saved = json.loads((model / "video_model" / "talking_head.json").read_text())["autoencoder"]
    assert saved == {"kind": "vae", "pretrained": "autoencoder", "subfolder": None}
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    expected = FaceEditTalkerPipeline.from_pretrained(referenced).video_model.autoencoder.encode(images)

    shutil.rmtree(tmp_path / "stage0")  # the original VAE is gone: only the model folder's copy is left
    moved = tmp_path / "elsewhere"
    shutil.move(model, moved)
    autoencoder = FaceEditTalkerPipeline.from_pretrained(moved).video_model.autoencoder
    assert isinstance(autoencoder, LatentAutoencoder)
    assert autoencoder.source == str((moved / "video_model" / "autoencoder").resolve())
    torch.testing.assert_close(autoencoder.encode(images), expected)
    with pytest.raises(InputError, match="VAE folder not found"):
        FaceEditTalkerPipeline.from_pretrained(referenced)
    again = assemble_model(moved / "video_model", landmarks, tmp_path / "models" / "again")  # from a model folder
    assert (again / "video_model" / "autoencoder" / "config.json").is_file()


def test_edit_options_are_checked_with_clear_messages():
    request = parse_edits(["Eyeglasses", "Smiling"], [0.8, -0.3], [0, 2])
    assert request.alphas == {"Eyeglasses": 0.8, "Smiling": -0.3} and request.ramp == (0.0, 2.0)
    assert parse_edits("Eyeglasses", 0.8).alphas == {"Eyeglasses": 0.8}
    assert parse_edits(None, None) is None
    assert parse_edits("Blond_Hair", 0.5, keep="Male").keep == ("Male",)
    assert parse_edits("Blond_Hair", 0.5, keep=["Male", "Young", "Male"]).keep == ("Male", "Young")
    assert parse_edits("Blond_Hair", 0.5).keep == ()
    with pytest.raises(InputError, match="keep is given but no edit"):
        parse_edits(None, None, keep=["Male"])
    for args, message in [((["Eyeglasses", "Smiling"], [0.8]), "2 edits .* but 1 alphas"),
                          (("Eyeglasses", float("nan")), "not a finite number"),
                          (("Eyeglasses", "abc"), "must be a number"),
                          (("Eyeglasses", 0.5, [2, 1]), "0 <= start < end"),
                          ((None, 0.5), "no edit")]:  # fmt: skip
        with pytest.raises(InputError, match=message):
            parse_edits(*args)


def test_unknown_attribute_suggests_the_closest_and_alpha_range_is_checked(tiny_model):
    pipe = FaceEditTalkerPipeline.from_pretrained(tiny_model)
    with pytest.raises(InputError, match="unknown attribute 'Eyeglases'; did you mean 'Eyeglasses'"):
        pipe.check_inputs(parse_edits("Eyeglases", 0.5), None, "fp32")
    with pytest.raises(InputError, match="out of range"):
        pipe.check_inputs(parse_edits("Smiling", 1.5), None, "fp32")


def test_ramp_starts_unedited_and_ends_at_the_full_edit(tiny_model):
    pipe = FaceEditTalkerPipeline.from_pretrained(tiny_model)
    z_sem = torch.randn(1, 8)
    full = pipe.edited_codes(z_sem, EditRequest({"Eyeglasses": 0.8, "Smiling": -0.3}), 60)
    ramped = pipe.edited_codes(z_sem, EditRequest({"Eyeglasses": 0.8, "Smiling": -0.3}, (0.0, 2.0)), 60)
    assert full.shape == (1, 8) and ramped.shape == (1, 60, 8)
    torch.testing.assert_close(ramped[:, 0], z_sem)  # frame 0 (0 s): unedited
    torch.testing.assert_close(ramped[:, 50], full)  # 2 s: the full edit, and after it
    torch.testing.assert_close(ramped[:, -1], full)
    torch.testing.assert_close(ramped[:, 25], (z_sem + full) / 2)  # 1 s: halfway (Eq. 3 is linear in alpha)
    # The edit moves the code along the library's directions in standardised space.
    library = pipe.attribute_library
    moved = library.standardise(full) - library.standardise(z_sem)
    expected = math.sqrt(8) * (0.8 * library.direction("Eyeglasses") - 0.3 * library.direction("Smiling"))
    torch.testing.assert_close(moved[0], expected, atol=1e-5, rtol=1e-4)


def test_edit_reference_animates_the_inverted_edited_still_and_is_saved_with_the_model(tiny_model, short_speech,
                                                                                          monkeypatch, tmp_path):
    pipe = FaceEditTalkerPipeline.from_pretrained(tiny_model)
    assert pipe.edit_reference is False  # the paper's Z_T of the unedited reference unless the folder says otherwise
    starts = []  # the Z_T each video is denoised from
    denoise = pipe.video_model.denoise
    monkeypatch.setattr(pipe.video_model, "denoise", lambda z_T, *a, **k: starts.append(z_T) or denoise(z_T, *a, **k))

    def run(**options):
        return pipe(ASTRONAUT_PATH, short_speech, progress=False, paste_back=False, **options)

    plain = run(edit="Eyeglasses", alpha=0.8, edit_guidance=1.0, edit_region=True)
    anchored = run(edit="Eyeglasses", alpha=0.8, edit_guidance=1.0, edit_region=True, edit_reference=True)
    # The anchored video starts from the edited still (decoded as edit_image decodes it) inverted under the edited
    # code; the plain one from the reference's own Z_T, which the anchor's still started from.
    z_T = starts[0]
    assert len(starts) == 3 and starts[1].shape == z_T.shape == (1, 1, *z_T.shape[2:])
    expected = pipe.edited_reference(z_T, anchored.z_sem, anchored.edited_z_sem, parse_edits("Eyeglasses", 0.8),
                                     anchored.crop.landmarks, pipe.landmark_image(anchored.crop.landmarks), None,
                                     1.0, True, (0.0, 1.0))  # fmt: skip
    torch.testing.assert_close(starts[2], expected)
    assert (starts[2] - z_T).abs().mean() > 1e-3  # a different start ...
    assert np.abs(anchored.frames.astype(float) - plain.frames).mean() > 0.5  # ... and different frames
    torch.testing.assert_close(anchored.edited_z_sem, plain.edited_z_sem)  # the same edited code drives both
    # Without an edit there is nothing to anchor: the same video.
    np.testing.assert_array_equal(run(edit_reference=True).frames, run().frames)
    with pytest.raises(InputError, match="edit_reference animates the edited reference at full strength"):
        run(edit="Eyeglasses", alpha=0.8, ramp=[0, 0.4], edit_reference=True)
    with pytest.raises(InputError, match="edit_reference must be true or false, got 'yes'"):
        run(edit="Eyeglasses", alpha=0.8, edit_reference="yes")
    pipe.edit_reference = True  # as a model's default it anchors the edits at full strength and leaves ramps be
    ramped = run(edit="Eyeglasses", alpha=0.8, ramp=[0, 0.4])
    torch.testing.assert_close(starts[-1], z_T)
    assert ramped.edited_z_sem.shape[1] == len(ramped.frames)
    pipe.save_pretrained(tmp_path / "anchored")
    assert json.loads((tmp_path / "anchored" / "model_index.json").read_text())["edit_reference"] is True
    assert FaceEditTalkerPipeline.from_pretrained(tmp_path / "anchored").edit_reference is True


@pytest.fixture(scope="module")
def generated(tiny_model, short_speech, tmp_path_factory):
    folder = tmp_path_factory.mktemp("generated")
    pipe = FaceEditTalkerPipeline.from_pretrained(tiny_model)
    result = pipe(ASTRONAUT_PATH, short_speech, edit="Eyeglasses", alpha=0.8, ramp=[0, 0.4],
                  output=folder / "out.mp4", landmarks_output=folder / "out_landmarks.mp4", progress=False)
    return result, short_speech


def test_pipeline_writes_h264_aac_at_25_fps_with_every_frame_and_the_whole_audio(generated):
    result, speech = generated
    duration = len(load_audio(speech)) / 16000
    frames, (vcodec, acodec, fps, pix_fmt, size), audio_seconds = probe(result.path)
    assert result.num_frames == frames == math.ceil(duration * 25) == 18
    assert (vcodec, acodec, fps, pix_fmt) == ("h264", "aac", 25.0, "yuv420p")
    assert size == (512, 512)  # pasted back into the whole portrait
    assert abs(audio_seconds - duration) <= 0.040
    # The ramp: one code per frame, the first unedited, the last (0.68 s > 0.4 s) fully edited.
    assert result.edited_z_sem.shape == (1, 18, 8)
    torch.testing.assert_close(result.edited_z_sem[:, 0], result.z_sem)
    torch.testing.assert_close(result.edited_z_sem[:, -1], result.edited_z_sem[:, 10])
    assert (result.edited_z_sem[:, -1] - result.z_sem).abs().max() > 1e-3
    # Landmarks follow the crop frame and the side-by-side video is frame | landmark image.
    assert result.landmarks.shape == (18, 478, 3)
    side_frames, (_, _, _, _, side_size), _ = probe(result.landmarks_path)
    assert side_frames == 18 and side_size == (512, 1024)


def test_paste_back_changes_only_the_crop_square(generated, tiny_model, short_speech):
    result, _ = generated
    with av.open(str(result.path)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    from faceedittalker.data.portrait import load_portrait

    portrait = load_portrait(ASTRONAUT_PATH).astype(int)
    x0, y0, x1, y1 = result.crop.box
    outside = np.ones(portrait.shape[:2], bool)
    outside[max(0, y0) : y1, max(0, x0) : x1] = False
    assert np.abs(first - portrait)[outside].mean() < 3  # H.264 noise only
    assert np.abs(first - portrait)[~outside].mean() > 3  # the random model's face is pasted in


@pytest.mark.parametrize("suffix, rate, channels", [(".m4a", 16000, 1), (".mp3", 48000, 2)])
def test_german_m4a_and_stereo_48k_mp3_speech_work(tiny_model, tmp_path, suffix, rate, channels):
    waveform = load_audio(speech_path("de_male"), rate)[: int(0.5 * rate)]
    if channels == 2:
        waveform = np.stack([waveform, 0.5 * waveform], axis=1)
    path = write_audio(tmp_path / f"de{suffix}", waveform, rate)
    pipe = FaceEditTalkerPipeline.from_pretrained(tiny_model)
    result = pipe(ASTRONAUT_PATH, path, paste_back=False, progress=False)  # frames returned, the crop alone
    assert result.num_frames == math.ceil(len(load_audio(path)) / 16000 * 25)
    assert result.frames.shape == (result.num_frames, 32, 32, 3)


def test_set_invert_steps_is_checked_and_used_by_the_next_inversion(tiny_model, monkeypatch):
    from faceedittalker.models.talking_head import check_invert_steps

    pipe = FaceEditTalkerPipeline.from_pretrained(tiny_model)
    ddim = pipe.video_model.ddim
    used = []
    invert = ddim.invert

    def recording(denoiser, z0, num_steps, progress=False):
        used.append(num_steps)
        return invert(denoiser, z0, num_steps, progress)

    monkeypatch.setattr(ddim, "invert", recording)
    pipe.set_invert_steps(4)
    pipe.edit_image(ASTRONAUT_PATH, "Eyeglasses", 0.5, steps=2)
    assert used == [4] and pipe.video_model.invert_steps == 4
    for bad in (0, -3, 2.5, True, "10"):
        with pytest.raises(InputError, match="positive whole number"):
            pipe.set_invert_steps(bad)
    assert pipe.video_model.invert_steps == 4  # a refused value changes nothing
    monkeypatch.setattr(ddim.config, "timestep_spacing", "trailing")
    with pytest.raises(InputError, match="must divide 1000"):
        check_invert_steps(ddim, 7)
    check_invert_steps(ddim, 50)  # 50 divides T = 1000
