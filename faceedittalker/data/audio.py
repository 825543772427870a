"""Speech audio: reading any common file as 16 kHz mono, checking that it is usable speech, and where a clip
folder caches its audio features (the encoders themselves are `models/audio_encoder.py`).

Reading goes through PyAV (FFmpeg), so wav, mp3, m4a/aac, flac, ogg/opus and the audio track of video files
all work, at any sample rate and channel count; channels are averaged and the result resampled with
`torchaudio.functional.resample`. (`torchaudio.load` is not used: in torchaudio 2.9 it needs torchcodec.)

Short and silent audio: `load_audio` reads anything that decodes (a 10 ms file gives 160 samples) and an
audio encoder turns it into ceil(duration x 25) rows (a 10 ms file: 1 row; audio shorter than wav2vec2's 25 ms
receptive field is zero-padded). Whether such audio is usable speech is decided by `check_speech`, which the
command-line tools call: shorter than `MIN_SPEECH_SECONDS` or quieter than `SILENCE_DBFS` is an `InputError`.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional

from faceedittalker.errors import InputError

SAMPLE_RATE = 16000
VIDEO_FPS = 25
MIN_SPEECH_SECONDS = 0.2  # 5 video frames; less cannot carry a syllable
SILENCE_DBFS = -60.0  # RMS level below which a recording counts as silent
AUDIO_EXTENSIONS = (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".wma")
FEATURES_DIR = "audio_features"  # inside a clip folder: <clip>/audio_features/<encoder slug>.npy


def resample(waveform: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited (sinc) resampling of a 1-D float waveform."""
    if orig_rate == new_rate:
        return waveform
    tensor = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    return torchaudio.functional.resample(tensor, orig_rate, new_rate).numpy()


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The audio of a file (audio or video) as a mono float32 waveform in [-1, 1] at `sample_rate`.

    A missing, unreadable or empty file, or a file without an audio stream, is an `InputError`.
    """
    import av  # PyAV (FFmpeg) only where a file is decoded

    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file not found: {path}")
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InputError(f"no audio stream in {path}")
            stream = container.streams.audio[0]
            native_rate = stream.codec_context.sample_rate or stream.rate
            declared_seconds = float(stream.duration * stream.time_base) if stream.duration else None
            # Planar float at the native rate and layout: every codec's sample format reads the same way.
            converter = av.AudioResampler(format="fltp")
            for frame in container.decode(stream):
                for converted in converter.resample(frame):
                    chunks.append(converted.to_ndarray().mean(axis=0))
            for converted in converter.resample(None):
                chunks.append(converted.to_ndarray().mean(axis=0))
    except InputError:
        raise
    except (av.FFmpegError, UnicodeDecodeError, IndexError, ValueError) as err:
        raise InputError(f"cannot read audio from {path}: {err}") from err
    if not chunks or sum(len(c) for c in chunks) == 0 or not native_rate:
        raise InputError(f"no audio samples in {path}")
    waveform = np.concatenate(chunks).astype(np.float32)
    if declared_seconds:
        # Codecs decode whole frames (AAC: 1024 samples); drop the padding past the declared duration.
        waveform = waveform[: max(1, round(declared_seconds * native_rate))]
    return np.clip(resample(waveform, int(native_rate), sample_rate), -1.0, 1.0)


def num_video_frames(num_samples: int, sample_rate: int = SAMPLE_RATE, fps: float = VIDEO_FPS) -> int:
    """Video frames covering the audio: ceil(duration x fps), at least 1 for non-empty audio."""
    # Rounded first so that exact multiples (1.0 s = 25 frames) are not pushed up by float error.
    return max(1, math.ceil(round(num_samples * fps / sample_rate, 6))) if num_samples > 0 else 0


def rms_dbfs(waveform: np.ndarray) -> float:
    """RMS level in dB relative to full scale (-inf for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(waveform, dtype=np.float64)))) if len(waveform) else 0.0
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def check_speech(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE, source: str = "audio") -> None:
    """Raise `InputError` when a waveform cannot drive a talking head: too short or silent."""
    seconds = len(waveform) / sample_rate
    if seconds < MIN_SPEECH_SECONDS:
        raise InputError(
            f"{source} is too short: {seconds * 1000:.0f} ms (at least {MIN_SPEECH_SECONDS * 1000:.0f} ms needed)"
        )
    level = rms_dbfs(waveform)
    if level < SILENCE_DBFS:
        raise InputError(f"{source} is silent: RMS level {level:.0f} dBFS (below {SILENCE_DBFS:.0f} dBFS)")


def encoder_slug(name: str) -> str:
    """A file-name-safe cache key: "facebook/wav2vec2-base-960h" -> "facebook--wav2vec2-base-960h"."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip("/").replace("/", "--"))


def feature_cache_path(clip_dir: str | os.PathLike, encoder_name: str) -> Path:
    """Where a clip folder keeps the features of one encoder."""
    return Path(clip_dir) / FEATURES_DIR / f"{encoder_slug(encoder_name)}.npy"
