"""Shared builders of real test media: the astronaut portrait, espeak-ng speech, a "talking" video."""

from __future__ import annotations

from pathlib import Path

import av
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

    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim == 1:
        waveform = waveform[:, None]
    channels = waveform.shape[1]
    codecs = {".wav": "pcm_s16le", ".mp3": "libmp3lame", ".m4a": "aac", ".flac": "flac", ".ogg": "libopus"}
    codec = codec or codecs[path.suffix]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=sample_rate, layout="mono" if channels == 1 else "stereo")
        _mux_audio(container, stream, waveform, sample_rate)
    return path


def _mux_audio(container, stream, waveform: np.ndarray, sample_rate: int) -> None:
    """Encode a (samples, channels) float waveform into an open PyAV audio stream and flush it."""
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(waveform.T), format="fltp", layout=stream.layout.name)
    frame.sample_rate = sample_rate
    resampler = av.AudioResampler(format=stream.format.name, layout=stream.layout.name, rate=sample_rate)
    for converted in resampler.resample(frame) + resampler.resample(None):
        for packet in stream.encode(converted):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


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


# Where the astronaut's mouth and face are in the 512 px portrait (found once with the Face Landmarker).
ASTRONAUT_MOUTH_XY = (223.0, 146.0)
ASTRONAUT_FACE_XY = (224.0, 123.0)


def _loudness_per_frame(waveform: np.ndarray, rate: int, fps: float, num_frames: int) -> np.ndarray:
    hop = rate / fps
    loudness = np.array(
        [np.sqrt(np.mean(waveform[int(i * hop) : int((i + 1) * hop)] ** 2) + 1e-12) for i in range(num_frames)]
    )
    return loudness / max(loudness.max(), 1e-6)


def talking_frames(loudness: np.ndarray, fps: float, width: int = 640, height: int = 512) -> np.ndarray:
    """The astronaut "talking": a small head sway, and the lower lip and jaw pulled down with the loudness.

    The 512 px portrait sits in a wider grey canvas, so the video is not square. Returns (T, H, W, 3) uint8.
    """
    import cv2

    portrait = astronaut()
    canvas = np.full((height, width, 3), 90, np.uint8)
    left = (width - portrait.shape[1]) // 2
    canvas[:, left : left + portrait.shape[1]] = portrait[:height]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    mouth_x, mouth_y = ASTRONAUT_MOUTH_XY[0] + left, ASTRONAUT_MOUTH_XY[1]
    # Downward pull: strongest just under the lips, fading over the chin; zero above the lip line.
    below = 1 / (1 + np.exp(-(ys - mouth_y) / 2.0))
    bump = np.exp(-(((xs - mouth_x) / 26.0) ** 2) - ((ys - mouth_y - 10) / 22.0) ** 2)
    pull = (below * bump).astype(np.float32)
    centre = (ASTRONAUT_FACE_XY[0] + left, ASTRONAUT_FACE_XY[1])
    frames = np.empty((len(loudness), height, width, 3), np.uint8)
    for i, level in enumerate(loudness):
        t = i / fps
        mouth = cv2.remap(canvas, xs, ys - 9.0 * level * pull, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        sway = cv2.getRotationMatrix2D(centre, 2.0 * np.sin(2 * np.pi * 0.5 * t), 1.0)
        sway[:, 2] += (5 * np.sin(2 * np.pi * 0.3 * t), 3 * np.sin(2 * np.pi * 0.4 * t))
        frames[i] = cv2.warpAffine(mouth, sway, (width, height), borderMode=cv2.BORDER_REFLECT)
    return frames


def write_video(
    path: Path,
    frames: np.ndarray,
    fps: int,
    audio: np.ndarray | None = None,
    audio_rate: int = 44100,
    crf: int = 18,
) -> Path:
    """H.264 video (+ AAC audio, (N,) or (N, C) float) with PyAV."""

    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt = "yuv420p" if crf > 0 else "yuv444p"
        video.options = {"crf": str(crf), "preset": "ultrafast"}
        if audio is not None:
            audio = np.asarray(audio, np.float32).reshape(len(audio), -1)
            sound = container.add_stream("aac", rate=audio_rate, layout="mono" if audio.shape[1] == 1 else "stereo")
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio is not None:
            _mux_audio(container, sound, audio, audio_rate)
    return path


def talking_video(path: Path, seconds: float = 3.0, fps: int = 30, audio_rate: int = 44100) -> Path:
    """A 30 fps "talking" astronaut with the en_male speech as 44.1 kHz stereo AAC (mouth follows loudness)."""
    import soundfile

    from faceedittalker.data.audio import resample

    speech, rate = soundfile.read(speech_path("en_male"), dtype="float32")
    speech = resample(speech, rate, audio_rate)
    # Longer videos (benchmarks) repeat the sentence.
    speech = np.tile(speech, int(np.ceil(seconds * audio_rate / len(speech))))[: int(seconds * audio_rate)]
    num_frames = int(round(seconds * fps))
    loudness = _loudness_per_frame(speech, audio_rate, fps, num_frames)
    stereo = np.stack([speech, 0.8 * speech], axis=1)
    return write_video(path, talking_frames(loudness, fps), fps, stereo, audio_rate)


def faceless_video(path: Path, seconds: float = 2.5, fps: int = 24, with_audio: bool = True) -> Path:
    """Moving colour gradients (no face) with a tone, 24 fps."""
    num_frames = int(round(seconds * fps))
    ys, xs = np.mgrid[0:240, 0:320]
    frames = np.stack(
        [np.stack([(xs + 4 * i) % 256, (ys + 2 * i) % 256, np.full_like(xs, 128)], axis=-1) for i in range(num_frames)]
    ).astype(np.uint8)
    tone = 0.2 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * 22050)) / 22050)
    return write_video(path, frames, fps, tone if with_audio else None, 22050)
