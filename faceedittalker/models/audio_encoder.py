"""Fig. 2(b)'s Wav2Vec module, A^{1:T} = Wav2Vec(S_audio) (Eq. 6): speech -> features at the video frame rate.

Features follow AniPortrait / FaceFormer: the frozen `transformers.Wav2Vec2Model` turns 16 kHz audio into
50 Hz hidden states, which are linearly interpolated to `num_video_frames(...)` = ceil(duration x 25) frames,
so frame t of the video gets row t of the features. `MelFeatureEncoder` is a drop-in sibling without weights
(log mel spectrogram, one 640-sample window per video frame, as in the paper's Sec. V-A) for CPU-sized
experiments; both share the per-clip cache of `CachedAudioEncoder`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional

from faceedittalker.data.audio import (
    SAMPLE_RATE,
    VIDEO_FPS,
    encoder_slug,
    feature_cache_path,
    load_audio,
    num_video_frames,
    resample,
)
from faceedittalker.errors import InputError


class CachedAudioEncoder:
    """What every audio encoder shares: waveform checks, files, and the per-clip feature cache.

    Subclasses set `name` (the cache key), `dim` and `fps` and implement `__call__(waveform, sample_rate)`
    -> (ceil(duration x fps), dim) float32 on the CPU.
    """

    name: str
    dim: int
    fps: float

    @property
    def slug(self) -> str:
        return encoder_slug(self.name)

    def __call__(self, waveform: np.ndarray | torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, waveform: np.ndarray | torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        """Same as calling the encoder."""
        return self(waveform, sample_rate)

    def _prepare(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> tuple[np.ndarray, int]:
        """A mono float32 waveform at 16 kHz and its number of video frames (an empty one is an `InputError`)."""
        if isinstance(waveform, torch.Tensor):
            waveform = waveform.detach().cpu().numpy()
        waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)
        if sample_rate != SAMPLE_RATE:
            waveform = resample(waveform, sample_rate, SAMPLE_RATE)
        num_frames = num_video_frames(len(waveform), SAMPLE_RATE, self.fps)
        if num_frames == 0:
            raise InputError("audio is empty")
        return waveform, num_frames

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


class AudioFeatureEncoder(CachedAudioEncoder):
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
        self.source = str(local.resolve()) if looks_local else source  # absolute: exports load from anywhere
        self.name = name or (local.name if looks_local else source)
        if layer is not None:
            self.name += f"@layer{layer}"
        self.dim = self.model.config.hidden_size

    def describe(self) -> dict:
        """The settings a model folder stores (`build_audio_encoder` rebuilds the encoder from them)."""
        return {"kind": "wav2vec2", "model_name_or_path": self.source, "layer": self.layer, "fps": self.fps,
                "name": self.name.removesuffix(f"@layer{self.layer}") if self.layer is not None else self.name}

    @torch.inference_mode()
    def _hidden_states(self, waveform: torch.Tensor) -> torch.Tensor:
        """(N,) 16 kHz, already normalised -> (frames at 50 Hz, D)."""
        output = self.model(waveform[None].to(self.device), output_hidden_states=self.layer is not None)
        hidden = output.last_hidden_state if self.layer is None else output.hidden_states[self.layer]
        return hidden[0].float().cpu()

    @torch.inference_mode()
    def __call__(self, waveform: np.ndarray | torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        """Features (ceil(duration x fps), D) float32 on the CPU for a mono waveform."""
        waveform, num_frames = self._prepare(waveform, sample_rate)
        audio = torch.from_numpy(waveform)
        if self.normalize:  # over the whole recording, so chunks of long audio share one scale
            audio = (audio - audio.mean()) / torch.sqrt(audio.var(unbiased=False) + 1e-7)
        # wav2vec2's convolutions need 400 samples (25 ms) for one output frame.
        audio = F.pad(audio, (0, max(0, 400 - len(audio))))
        hidden = self._chunked_hidden_states(audio)
        # 50 Hz -> fps, as AniPortrait does (linear interpolation over the whole sequence).
        features = F.interpolate(hidden.T[None], size=num_frames, mode="linear", align_corners=True)[0].T
        return features.contiguous()

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


class MelFeatureEncoder(CachedAudioEncoder):
    """Log mel spectrogram, one window per video frame: 16 kHz waveform -> (T_frames, n_mels) at `fps`.

    A weight-free stand-in for wav2vec2 in CPU-sized experiments, with the same interface and cache. The paper's
    Mel-spectrogram setting (Sec. V-A): a periodic Hann window of 16000 / fps samples (640 at 25 fps) with the
    same hop, so row t covers exactly the audio of video frame t (samples [640 t, 640 t + 640), centred on the
    frame); the last frame is zero-padded. Power spectrum (n_fft = window) -> `n_mels` HTK mel bands over
    0-8 kHz (torchaudio's `melscale_fbanks`, unnormalised triangles) -> log10 with a floor -> a FIXED affine map:

        features = (log10(max(mel_power, 1e-5)) - LOG_OFFSET) / LOG_SCALE,   LOG_OFFSET = -2, LOG_SCALE = 2

    The constants make the espeak speech of `assets/speech/` roughly zero-mean and unit-variance (measured
    log10 mean -1.7 to -2.1, std 1.9 to 2.2 over all bands and frames). They are not per-utterance statistics,
    so loudness survives (a quiet syllable stays quieter than a loud one) and digital silence is always the
    same constant vector, (log10(1e-5) + 2) / 2 = -1.5: the floor, 93 dB below the band of a full-scale
    1 kHz tone (which reaches 3.15).
    `device` is accepted so the two encoders are interchangeable; the features are computed on the CPU.
    """

    LOG_FLOOR = 1e-5
    LOG_OFFSET = -2.0
    LOG_SCALE = 2.0

    def __init__(
        self,
        n_mels: int = 80,
        fps: float = VIDEO_FPS,
        name: str | None = None,
        device: str | torch.device = "cpu",
    ):
        self.n_mels = n_mels
        self.fps = fps
        self.dim = n_mels
        self.name = name or (f"logmel{n_mels}" if fps == VIDEO_FPS else f"logmel{n_mels}@{fps:g}fps")
        self.frame_samples = SAMPLE_RATE / fps  # may be fractional (30 fps: 533.3); windows are placed exactly
        self.window_length = round(self.frame_samples)
        self.window = torch.hann_window(self.window_length, dtype=torch.float64)
        self.filterbank = torchaudio.functional.melscale_fbanks(
            n_freqs=self.window_length // 2 + 1,
            f_min=0.0,
            f_max=SAMPLE_RATE / 2,
            n_mels=n_mels,
            sample_rate=SAMPLE_RATE,
        ).double()  # (n_freqs, n_mels)

    def describe(self) -> dict:
        """The settings a model folder stores (`build_audio_encoder` rebuilds the encoder from them)."""
        return {"kind": "mel", "n_mels": self.n_mels, "fps": self.fps, "name": self.name}

    @torch.inference_mode()
    def __call__(self, waveform: np.ndarray | torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        """Features (ceil(duration x fps), n_mels) float32 on the CPU for a mono waveform."""
        waveform, num_frames = self._prepare(waveform, sample_rate)
        audio = torch.from_numpy(waveform).double()
        half = self.window_length // 2
        # Window t is centred on the middle of video frame t, (t + 0.5) x frame_samples; zero padding on both
        # sides covers the half windows at the ends (and the tail of a last frame that is only partly there).
        centres = torch.round((torch.arange(num_frames, dtype=torch.float64) + 0.5) * self.frame_samples).long()
        padded = F.pad(audio, (half, self.window_length + half))
        frames = padded[centres[:, None] + torch.arange(self.window_length)[None]]  # (T, window)
        power = torch.fft.rfft(frames * self.window, dim=1).abs().square()  # (T, n_freqs)
        mel = power @ self.filterbank  # (T, n_mels)
        features = (torch.log10(mel.clamp(min=self.LOG_FLOOR)) - self.LOG_OFFSET) / self.LOG_SCALE
        return features.float().contiguous()


def audio_encoder_from_name(
    name: str, device: str | torch.device = "cpu", layer: int | None = None, fps: float = VIDEO_FPS
) -> CachedAudioEncoder:
    """`logmel80` (or `logmelN`: N mel bands) -> `MelFeatureEncoder`; anything else is a wav2vec2 folder or hub id."""
    match = re.fullmatch(r"logmel(\d+)", str(name))
    if match and not Path(str(name)).expanduser().exists():  # a local wav2vec2 folder of that name wins
        return MelFeatureEncoder(n_mels=int(match.group(1)), fps=fps, device=device)
    return AudioFeatureEncoder(name, device=device, layer=layer, fps=fps)


# The audio encoders a model folder may name, by kind: loading builds one of these, never a callable named in a file.
AUDIO_ENCODERS: dict[str, type[CachedAudioEncoder]] = {"mel": MelFeatureEncoder, "wav2vec2": AudioFeatureEncoder}
# Exports written before kinds were stored named the class by its import path; only these two are understood.
_LEGACY_TARGETS = {
    "faceedittalker.models.audio_encoder.MelFeatureEncoder": "mel",
    "faceedittalker.data.audio.MelFeatureEncoder": "mel",
    "faceedittalker.models.audio_encoder.AudioFeatureEncoder": "wav2vec2",
    "faceedittalker.data.audio.AudioFeatureEncoder": "wav2vec2",
}


def audio_encoder_settings(settings: dict) -> dict:
    """Stored settings checked and in today's form `{"kind": ..., ...}` (legacy `_target_` exports are mapped);
    a kind outside `AUDIO_ENCODERS` is an `InputError`. Nothing is built or imported."""
    if not isinstance(settings, dict):
        raise InputError(f"audio encoder settings must be a JSON object, got {settings!r}")
    settings = dict(settings)
    if "_target_" in settings:
        target = settings.pop("_target_")
        if target not in _LEGACY_TARGETS:
            raise InputError(f"the audio encoder settings name {target!r}; only the kinds "
                             f"{', '.join(AUDIO_ENCODERS)} are loaded")  # fmt: skip
        settings["kind"] = _LEGACY_TARGETS[target]
    settings.pop("device", None)
    if settings.get("kind") not in AUDIO_ENCODERS:
        raise InputError(f"unknown audio encoder kind {settings.get('kind')!r}; choose from: "
                         f"{', '.join(AUDIO_ENCODERS)}")  # fmt: skip
    return settings


def build_audio_encoder(
    settings: dict, device: str | torch.device = "cpu", model_name_or_path: str | None = None
) -> CachedAudioEncoder:
    """The encoder a model folder describes: `{"kind": "mel" | "wav2vec2", ...settings}` (`describe()`).

    `model_name_or_path` overrides where the wav2vec2 weights live (a local folder or a hub id). A kind outside
    `AUDIO_ENCODERS`, or a settings key the encoder does not take, is an `InputError`.
    """
    settings = audio_encoder_settings(settings)
    kind = settings.pop("kind")
    if model_name_or_path and kind == "wav2vec2":
        settings["model_name_or_path"] = model_name_or_path
    try:
        return AUDIO_ENCODERS[kind](**settings, device=device)
    except TypeError as err:
        raise InputError(f"bad settings for the {kind} audio encoder: {err}") from err
