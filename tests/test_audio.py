"""Audio reading, wav2vec2 and log-mel features on espeak-ng speech, in several formats and rates."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from media_fixtures import speech_path, tiny_wav2vec2, write_audio

from faceedittalker import CONFIGS_DIR, REPO_ROOT
from faceedittalker.data.audio import (
    SAMPLE_RATE,
    check_speech,
    feature_cache_path,
    load_audio,
    num_video_frames,
    resample,
)
from faceedittalker.errors import InputError
from faceedittalker.models.audio_encoder import AudioFeatureEncoder, MelFeatureEncoder, audio_encoder_from_name


def speech_clip(folder: Path, speech: str) -> Path:
    """A folder holding the speech asset `speech` as a 16 kHz `audio.wav`: all the feature cache needs."""
    folder.mkdir()
    soundfile.write(folder / "audio.wav", load_audio(speech_path(speech)), SAMPLE_RATE)
    return folder


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return tiny_wav2vec2(tmp_path_factory.mktemp("tiny_wav2vec2"))


@pytest.fixture(scope="module")
def encoder(encoder_dir):
    return AudioFeatureEncoder(encoder_dir)


@pytest.fixture(scope="module")
def speech_files(tmp_path_factory):
    """The same English speech as the 22.05 kHz mono wav asset and as a 48 kHz stereo mp3."""
    folder = tmp_path_factory.mktemp("speech")
    waveform, rate = soundfile.read(speech_path("en_male"), dtype="float32")
    assert rate == 22050 and waveform.ndim == 1
    at_48k = resample(waveform, rate, 48000)
    stereo = np.stack([at_48k, 0.7 * at_48k], axis=1)
    return {
        "wav": speech_path("en_male"),
        "mp3": write_audio(folder / "speech.mp3", stereo, 48000),
        "flac": write_audio(folder / "speech.flac", stereo, 48000),
        "ogg": write_audio(folder / "speech.ogg", stereo, 48000),
        "duration": len(waveform) / rate,
    }


def test_num_video_frames_is_the_ceiling_at_25_fps():
    assert num_video_frames(16000) == 25
    assert num_video_frames(16001) == 26
    assert num_video_frames(160) == 1  # 10 ms
    assert num_video_frames(0) == 0
    assert num_video_frames(44100, sample_rate=44100, fps=30) == 30


def test_load_audio_resamples_and_downmixes_every_format(speech_files):
    reference = load_audio(speech_files["wav"])
    assert reference.dtype == np.float32 and reference.ndim == 1
    assert len(reference) == round(speech_files["duration"] * SAMPLE_RATE)
    assert 0.3 < np.abs(reference).max() <= 1.0
    for kind in ("mp3", "flac", "ogg"):
        decoded = load_audio(speech_files[kind])
        assert len(decoded) == len(reference), kind
        # Stereo (1.0, 0.7) averages to 0.85 of the mono signal; lossy codecs keep the waveform closely.
        correlation = np.corrcoef(decoded, reference)[0, 1]
        assert correlation > 0.97, (kind, correlation)
        gain = np.dot(decoded, reference) / np.dot(reference, reference)
        assert gain == pytest.approx(0.85, abs=0.06), kind


def test_same_speech_as_wav_and_stereo_mp3_gives_the_same_features(encoder, speech_files):
    from_wav = encoder.encode_file(speech_files["wav"])
    from_mp3 = encoder.encode_file(speech_files["mp3"])
    expected = math.ceil(speech_files["duration"] * 25)
    assert from_wav.shape == from_mp3.shape == (expected, encoder.dim)
    assert from_wav.dtype == torch.float32 and torch.isfinite(from_wav).all()
    cosine = torch.nn.functional.cosine_similarity(from_wav, from_mp3, dim=1)
    # mp3 is lossy and the encoder random: close on average, a few frames (pauses) less so.
    assert cosine.mean() > 0.97 and (cosine > 0.9).float().mean() > 0.9
    assert (from_wav - from_mp3).norm() / from_wav.norm() < 0.2
    # Features vary over time (speech, not a constant) and do not depend on the input rate given.
    assert from_wav.std(dim=0).mean() > 0.01
    native, rate = soundfile.read(speech_path("en_male"), dtype="float32")
    assert torch.allclose(encoder(native, sample_rate=rate), from_wav, atol=1e-5)


def test_every_speech_asset_encodes_to_its_frame_count(encoder):
    for name in ("en_male", "en_female", "de_male"):
        info = soundfile.info(speech_path(name))
        features = encoder.encode_file(speech_path(name))
        assert features.shape[0] == math.ceil(info.frames / info.samplerate * 25)


def test_long_audio_is_encoded_in_chunks_with_the_same_length(encoder_dir, speech_files):
    chunked = AudioFeatureEncoder(encoder_dir, max_chunk_seconds=5.0)
    whole = AudioFeatureEncoder(encoder_dir)
    waveform = np.tile(load_audio(speech_files["wav"]), 2)  # about 12 s: three chunks
    assert chunked(waveform).shape == whole(waveform).shape == (num_video_frames(len(waveform)), whole.dim)


def test_ten_ms_and_silent_audio(encoder, tmp_path):
    ten_ms = write_audio(tmp_path / "ten_ms.wav", 0.3 * np.sin(np.arange(441) * 0.2), 44100)
    waveform = load_audio(ten_ms)
    assert len(waveform) == 160
    assert encoder(waveform).shape == (1, encoder.dim)  # readable and encodable ...
    with pytest.raises(InputError, match="too short: 10 ms"):
        check_speech(waveform)  # ... but not speech a talking head can follow
    silent = load_audio(write_audio(tmp_path / "silent.wav", np.zeros(16000), 16000))
    features = encoder(silent)
    assert features.shape == (25, encoder.dim) and torch.isfinite(features).all()
    with pytest.raises(InputError, match="silent"):
        check_speech(silent)
    check_speech(load_audio(speech_path("de_male")))  # real speech passes


def test_unreadable_and_missing_files_are_input_errors(tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00not really a wave file" * 10)
    with pytest.raises(InputError, match="cannot read audio from .*garbage.wav"):
        load_audio(garbage)
    with pytest.raises(InputError, match="not found"):
        load_audio(tmp_path / "missing.mp3")
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    with pytest.raises(InputError):
        load_audio(empty)


def test_missing_model_folder_names_the_file(tmp_path):
    with pytest.raises(InputError, match="config.json"):
        AudioFeatureEncoder(tmp_path / "no_model")


def test_clip_feature_cache_is_keyed_by_encoder_name(encoder, tmp_path):
    clip = speech_clip(tmp_path / "clip0", "en_female")
    features = encoder.clip_features(clip)
    cache = feature_cache_path(clip, encoder.name)
    assert cache == clip / "audio_features" / f"{encoder.slug}.npy" and cache.is_file()
    np.save(cache, np.full(features.shape, 7.0, np.float32))  # a second call reads the cache
    assert torch.equal(encoder.clip_features(clip), torch.full(features.shape, 7.0))
    assert [p.name for p in (clip / "audio_features").iterdir()] == [cache.name]  # no temporary left


@pytest.mark.parametrize(
    ("kind", "message"),
    [("ten_ms", "too short"), ("silent", "silent"), ("unreadable", "cannot read audio")],
)
def test_cli_rejects_bad_audio_with_one_line_and_exit_2(kind, message, encoder_dir, tmp_path):
    path = tmp_path / f"{kind}.wav"
    if kind == "ten_ms":
        write_audio(path, 0.3 * np.sin(np.arange(160) * 0.2), 16000)
    elif kind == "silent":
        write_audio(path, np.zeros(32000), 16000)
    else:
        path.write_bytes(b"\x00\x01garbage" * 100)
    output = tmp_path / "features.npy"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts/audio_features.py"), f"input={path}", f"output={output}"]
        + [f"encoder={encoder_dir}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no output, no Hydra folders


def test_cli_writes_features_for_good_speech(encoder_dir, tmp_path):
    output = tmp_path / "features.npy"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts/audio_features.py"), f"input={speech_path('de_male')}"]
        + [f"output={output}", f"encoder={encoder_dir}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    info = soundfile.info(speech_path("de_male"))
    assert np.load(output).shape == (math.ceil(info.frames / info.samplerate * 25), 32)


# --- log-mel features (MelFeatureEncoder) ---


@pytest.mark.parametrize("num_samples", [160, 639, 640, 641, 16000, 16001, 23456])
def test_mel_features_have_one_row_per_video_frame(num_samples):
    encoder = MelFeatureEncoder()
    rng = np.random.default_rng(num_samples)
    features = encoder(0.1 * rng.standard_normal(num_samples).astype(np.float32))
    assert features.shape == (num_video_frames(num_samples), 80) == (math.ceil(num_samples / 640), encoder.dim)
    assert features.dtype == torch.float32 and features.device.type == "cpu" and torch.isfinite(features).all()
    assert encoder.encode(torch.zeros(num_samples)).shape == features.shape  # tensors work too
    small = MelFeatureEncoder(n_mels=40)
    assert small(np.zeros(num_samples)).shape == (features.shape[0], 40)


def test_mel_features_follow_a_tone_burst_frame_by_frame():
    """Silence, a burst (1 kHz tone + a little noise) over video frames 10-19, silence: row t is frame t."""
    encoder = MelFeatureEncoder()
    waveform = np.zeros(30 * 640, np.float32)
    tone = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(10 * 640) / SAMPLE_RATE)
    waveform[10 * 640 : 20 * 640] = tone + 0.02 * np.random.default_rng(0).standard_normal(10 * 640)
    features = encoder(waveform)
    energy = features.mean(dim=1)
    loud, silent = energy[10:20], torch.cat([energy[:10], energy[20:]])
    assert loud.min() > silent.max() + 1.0
    # Windows do not overlap the neighbouring frames: silence is exactly the fixed silence vector.
    floor, offset, scale = MelFeatureEncoder.LOG_FLOOR, MelFeatureEncoder.LOG_OFFSET, MelFeatureEncoder.LOG_SCALE
    assert torch.allclose(silent, torch.full_like(silent, (math.log10(floor) - offset) / scale))
    # The tone is the strongest band, about 1 kHz (HTK mel: 1000 mel = band 28 of 80 over 0-2840 mel).
    assert (features[10:20].argmax(dim=1) - 27).abs().max() <= 1
    # Fixed normalisation: a quieter burst gives lower features (per-utterance normalisation would not).
    assert encoder(0.1 * waveform)[10:20].mean() < features[10:20].mean() - 0.5
    # Input at another rate gives the same frames (but the top bands: the resampler's low-pass ends at 8 kHz).
    at_48k = encoder(resample(waveform, SAMPLE_RATE, 48000), sample_rate=48000)
    assert torch.allclose(at_48k[:, :70], features[:, :70], atol=0.01)


def test_mel_features_of_speech_vary_and_are_roughly_standardised():
    features = MelFeatureEncoder().encode_file(speech_path("en_male"))
    info = soundfile.info(speech_path("en_male"))
    assert features.shape == (math.ceil(info.frames / info.samplerate * 25), 80)
    assert abs(features.mean()) < 0.5 and 0.5 < features.std() < 1.5


def test_mel_name_slug_and_clip_cache_round_trip(tmp_path):
    encoder = MelFeatureEncoder()
    assert encoder.name == encoder.slug == "logmel80" and encoder.dim == 80 and encoder.fps == 25
    assert MelFeatureEncoder(n_mels=40).name == "logmel40" and MelFeatureEncoder(fps=30).slug == "logmel80-30fps"
    assert MelFeatureEncoder(name="my/mel").slug == "my--mel"
    clip = speech_clip(tmp_path / "clip0", "de_male")
    features = encoder.clip_features(clip)
    cache = feature_cache_path(clip, encoder.name)
    assert cache == clip / "audio_features" / "logmel80.npy" and cache.is_file()
    assert torch.equal(torch.from_numpy(np.load(cache)), features)
    assert torch.allclose(features, encoder.encode_file(clip / "audio.wav"))
    np.save(cache, np.full(features.shape, 7.0, np.float32))  # a second call reads the cache
    assert torch.equal(encoder.clip_features(clip), torch.full(features.shape, 7.0))
    assert [p.name for p in (clip / "audio_features").iterdir()] == ["logmel80.npy"]  # no temporary left
    fresh = speech_clip(tmp_path / "clip1", "de_male")
    encoder.clip_features(fresh, write_cache=False)
    assert not (fresh / "audio_features").exists()


def test_audio_encoder_configs_and_names_pick_the_encoder(encoder_dir):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    mel = instantiate(OmegaConf.load(CONFIGS_DIR / "audio_encoder/mel.yaml"))
    assert isinstance(mel, MelFeatureEncoder) and mel.name == "logmel80"
    config = OmegaConf.load(CONFIGS_DIR / "audio_encoder/wav2vec2.yaml")
    assert config.model_name_or_path == "facebook/wav2vec2-base-960h"
    wav2vec2 = instantiate(config, model_name_or_path=str(encoder_dir))
    assert isinstance(wav2vec2, AudioFeatureEncoder) and wav2vec2.dim == 32
    assert isinstance(audio_encoder_from_name("logmel64"), MelFeatureEncoder)
    assert audio_encoder_from_name("logmel64").dim == 64
    assert isinstance(audio_encoder_from_name(str(encoder_dir)), AudioFeatureEncoder)


def complete_clip(folder: Path, speech: str) -> None:
    """A clip folder as `list_clips` accepts it: the speech asset, (empty) frames, landmarks and meta."""
    speech_clip(folder, speech)
    (folder / "frames").mkdir()
    np.save(folder / "landmarks.npy", np.zeros((1, 478, 3), np.float32))
    (folder / "meta.json").write_text("{}")


def test_cli_writes_mel_features_for_clip_folders(tmp_path):
    for index, name in enumerate(("en_male", "de_male")):
        complete_clip(tmp_path / f"clip{index}", name)
    complete_clip(tmp_path / ".partial_clip2", "en_female")  # an unfinished folder of the preprocessing
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts/audio_features.py"), f"input={tmp_path}", "encoder=logmel80"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "features of 2 clips" in result.stdout
    assert not (tmp_path / ".partial_clip2" / "audio_features").exists()
    for index, name in enumerate(("en_male", "de_male")):
        cached = np.load(tmp_path / f"clip{index}" / "audio_features" / "logmel80.npy")
        info = soundfile.info(speech_path(name))
        assert cached.shape == (math.ceil(info.frames / info.samplerate * 25), 80)
