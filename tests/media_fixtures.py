"""Shared builders of real test media: the astronaut portrait, espeak-ng speech, a "talking" video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from faceedittalker import ASSETS_DIR

ASTRONAUT_PATH = ASSETS_DIR / "astronaut.jpg"
SPEECH_DIR = ASSETS_DIR / "speech"


def astronaut() -> np.ndarray:
    """The public-domain astronaut portrait (512x512 RGB uint8)."""
    with Image.open(ASTRONAUT_PATH) as image:
        return np.asarray(image.convert("RGB"))


def speech_path(name: str = "en_male") -> Path:
    return SPEECH_DIR / f"{name}.wav"


def write_audio(path: Path, waveform: np.ndarray, sample_rate: int, codec: str | None = None) -> Path:
    """Encode float audio (N,) mono or (N, C) with PyAV: wav (pcm_s16le), mp3, m4a (aac), flac, ogg (opus)."""
    import av

    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim == 1:
        waveform = waveform[:, None]
    channels = waveform.shape[1]
    codecs = {".wav": "pcm_s16le", ".mp3": "libmp3lame", ".m4a": "aac", ".flac": "flac", ".ogg": "libopus"}
    codec = codec or codecs[path.suffix]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=sample_rate, layout="mono" if channels == 1 else "stereo")
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(waveform.T), format="fltp", layout=stream.layout.name
        )
        frame.sample_rate = sample_rate
        resampler = av.AudioResampler(format=stream.format.name, layout=stream.layout.name, rate=sample_rate)
        for converted in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(converted):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def tiny_wav2vec2(folder: Path) -> Path:
    """A randomly initialised, tiny Wav2Vec2 (same 320-sample stride as the real ones) saved to `folder`."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        vocab_size=32,
    )
    torch.manual_seed(0)
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    return folder
