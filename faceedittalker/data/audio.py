"""Speech audio: reading any common file as 16 kHz mono, and wav2vec2 features at the video frame rate.

Reading goes through PyAV (FFmpeg), so wav, mp3, m4a/aac, flac, ogg/opus and the audio track of video files
all work, at any sample rate and channel count; channels are averaged and the result resampled with
`torchaudio.functional.resample`. (`torchaudio.load` is not used: in torchaudio 2.9 it needs torchcodec.)

Features follow AniPortrait / FaceFormer: the frozen `transformers.Wav2Vec2Model` turns 16 kHz audio into
50 Hz hidden states, which are linearly interpolated to `num_video_frames(...)` = ceil(duration x 25) frames,
so frame t of the video gets row t of the features.

Short and silent audio: `load_audio` reads anything that decodes (a 10 ms file gives 160 samples) and the
encoder turns it into ceil(duration x 25) rows (a 10 ms file: 1 row; audio shorter than wav2vec2's 25 ms
receptive field is zero-padded). Whether such audio is usable speech is decided by `check_speech`, which the
command-line tools call: shorter than `MIN_SPEECH_SECONDS` or quieter than `SILENCE_DBFS` is an `InputError`.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
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


class AudioFeatureEncoder:
    """Frozen wav2vec2: 16 kHz waveform -> (T_frames, D) features at `fps`.

    `model_name_or_path` is a local folder (`save_pretrained` layout) or a hub id such as
    `facebook/wav2vec2-base-960h`; `layer` picks a hidden state (None: the last). `name` is the cache key,
    by default the model name as given (for a local folder, its folder name).
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike,
        device: str | torch.device = "cpu",
        layer: int | None = None,
        fps: float = VIDEO_FPS,
        max_chunk_seconds: float = 30.0,
        name: str | None = None,
    ):
        from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

        source = str(model_name_or_path)
        local = Path(source).expanduser()
        looks_local = local.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1
        if looks_local and not (local / "config.json").is_file():
            raise InputError(
                f"wav2vec2 model not found: {local / 'config.json'} (save one with "
                "`hf download facebook/wav2vec2-base-960h --local-dir DIR` or pass a hub id)"
            )
        try:
            self.model = Wav2Vec2Model.from_pretrained(str(local) if looks_local else source)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot load wav2vec2 model {source!r}: {str(err).splitlines()[0]}") from err
        self.model.requires_grad_(False).eval().to(device)
        try:
            extractor = Wav2Vec2FeatureExtractor.from_pretrained(str(local) if looks_local else source)
            self.normalize = bool(extractor.do_normalize)
        except (OSError, ValueError):
            # No preprocessor_config.json: wav2vec2-base-960h and most fine-tuned checkpoints normalise.
            self.normalize = True
        self.device = torch.device(device)
        self.layer = layer
        self.fps = fps
        self.max_chunk_samples = int(max_chunk_seconds * SAMPLE_RATE)
        self.name = name or (local.name if looks_local else source)
        if layer is not None:
            self.name += f"@layer{layer}"
        self.dim = self.model.config.hidden_size

    @property
    def slug(self) -> str:
        return encoder_slug(self.name)

    @torch.inference_mode()
    def _hidden_states(self, waveform: torch.Tensor) -> torch.Tensor:
        """(N,) 16 kHz, already normalised -> (frames at 50 Hz, D)."""
        output = self.model(waveform[None].to(self.device), output_hidden_states=self.layer is not None)
        hidden = output.last_hidden_state if self.layer is None else output.hidden_states[self.layer]
        return hidden[0].float().cpu()

    @torch.inference_mode()
    def __call__(self, waveform: np.ndarray | torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        """Features (ceil(duration x fps), D) float32 on the CPU for a mono waveform."""
        waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)
        if sample_rate != SAMPLE_RATE:
            waveform = resample(waveform, sample_rate, SAMPLE_RATE)
        num_frames = num_video_frames(len(waveform), SAMPLE_RATE, self.fps)
        if num_frames == 0:
            raise InputError("audio is empty")
        audio = torch.from_numpy(waveform)
        if self.normalize:  # over the whole recording, so chunks of long audio share one scale
            audio = (audio - audio.mean()) / torch.sqrt(audio.var(unbiased=False) + 1e-7)
        # wav2vec2's convolutions need 400 samples (25 ms) for one output frame.
        audio = F.pad(audio, (0, max(0, 400 - len(audio))))
        hidden = self._chunked_hidden_states(audio)
        # 50 Hz -> fps, as AniPortrait does (linear interpolation over the whole sequence).
        features = F.interpolate(hidden.T[None], size=num_frames, mode="linear", align_corners=True)[0].T
        return features.contiguous()

    encode = __call__

    def _chunked_hidden_states(self, audio: torch.Tensor) -> torch.Tensor:
        """Long audio in overlapping chunks, so attention memory does not grow with the length squared."""
        if len(audio) <= self.max_chunk_samples:
            return self._hidden_states(audio)
        hop = 320  # samples per wav2vec2 frame
        context = 2 * SAMPLE_RATE  # both sides of a chunk, dropped after encoding
        step = (self.max_chunk_samples - 2 * context) // hop * hop
        pieces = []
        for start in range(0, len(audio), step):
            left = max(0, start - context)
            hidden = self._hidden_states(audio[left : start + step + context])
            first = (start - left) // hop
            pieces.append(hidden[first : first + step // hop])
        total = (len(audio) - 400) // hop + 1
        return torch.cat(pieces)[:total]

    def encode_file(self, path: str | os.PathLike) -> torch.Tensor:
        """Features of an audio (or video) file."""
        return self(load_audio(path))

    def clip_features(self, clip_dir: str | os.PathLike, write_cache: bool = True) -> torch.Tensor:
        """Features of a clip folder's `audio.wav`, read from / written to its feature cache."""
        cache = feature_cache_path(clip_dir, self.name)
        if cache.is_file():
            return torch.from_numpy(np.load(cache))
        features = self.encode_file(Path(clip_dir) / "audio.wav")
        if write_cache:
            cache.parent.mkdir(exist_ok=True)
            partial = cache.with_suffix(".partial.npy")
            np.save(partial, features.numpy())
            os.replace(partial, cache)  # never leave a half-written cache behind
        return features
