"""Alg. 4, controllable talking-head generation with facial attribute editing: portrait + speech (+ edits) -> mp4.

    A^{1:T} = Wav2Vec(S_audio)                       audio features as the model was trained (wav2vec2 or log-mel)
    L^{1:T} = P_ldm(A^{1:T}, l_ref)                  landmark sequence in the crop frame, drawn as landmark images
    z_sem   = E_sem(x_ref) (+ alpha * w_att)         Eq. 3, once per request (per frame when the edit ramps)
    Z_T     = DDIM-invert(E_img(x_ref) | z_sem)      with the UNEDITED code, once per request
    S_video = Dec(DDIM(Z_T | z_sem, F^{1:T} = E_ldm(L^{1:T})))

A model is one folder (`FaceEditTalkerPipeline.from_pretrained(DIR)`):

    model_index.json        manifest: part name -> kind, the audio encoder's kind and settings, format version
    video_model/            TalkingHeadModel (talking_head.json, semantic_encoder/, unet/, landmark_encoder/)
    landmark_predictor/     P_ldm (config.json + safetensors)
    attribute_library/      the stage-2 classifier (optional; without it an edit is an error)
    face_upsampler/         a learned x4 decoder of the generated face crops (optional, beyond the paper: a
                            pixel-space model's 32 px frames become 128 px faces; stage 0, `stage0.target=upsampler`)

The VAE and wav2vec2 are referenced (local path or hub id) and can be replaced at load time (`vae=`,
`audio_encoder=`). Memory stays flat in the length of the speech: landmark images are drawn, E_ldm is run and
the denoiser is evaluated window by window, and frames are decoded in batches and streamed to the writer.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from faceedittalker import __version__
from faceedittalker.data.audio import SAMPLE_RATE, VIDEO_FPS, check_speech, load_audio
from faceedittalker.data.portrait import FaceCrop, PasteBack, crop_face, find_face, load_portrait
from faceedittalker.data.video import VideoWriter
from faceedittalker.errors import InputError
from faceedittalker.landmarks.regions import region_masks
from faceedittalker.landmarks.render import render_sequence
from faceedittalker.models.attributes import AttributeClassifier, check_new_attribute
from faceedittalker.models.audio_encoder import CachedAudioEncoder, build_audio_encoder
from faceedittalker.models.face_upsampler import FaceUpsampler
from faceedittalker.models.feature_space import resolve_vae_reference
from faceedittalker.models.landmark_predictor import LandmarkPredictor, predict_landmarks
from faceedittalker.models.pretrained import FORMAT_VERSION, PretrainedFolder, atomic_folder
from faceedittalker.models.talking_head import TalkingHeadModel, check_invert_steps
from faceedittalker.training.checkpoint import write_json_atomic
from faceedittalker.utils.files import atomic_directory
from faceedittalker.utils.images import to_uint8

MODEL_INDEX = "model_index.json"
VAE_FOLDER = "autoencoder"  # a model folder's own copy of a local VAE, inside video_model/ (`assemble_model`)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
MAX_EDIT_GUIDANCE = 10.0  # beyond this the amplified edit leaves the images the decoder can draw


@dataclass
class EditRequest:
    """Attribute edits of one request: {name: alpha}, an optional ramp (start, end) in seconds, and the attributes
    the edits must not move (`AttributeClassifier.edit`'s `keep`)."""

    alphas: dict[str, float]
    ramp: tuple[float, float] | None = None
    keep: tuple[str, ...] = ()

    def strength(self, num_frames: int, fps: float = VIDEO_FPS) -> torch.Tensor:
        """Fraction of the full edit at each frame (T,): 1 everywhere, or 0 until `ramp[0]` s, rising linearly to
        1 at `ramp[1]` s, 1 after. Frame t is shown at t / fps seconds."""
        if self.ramp is None:
            return torch.ones(num_frames)
        start, end = self.ramp
        seconds = torch.arange(num_frames, dtype=torch.float64) / fps
        return ((seconds - start) / (end - start)).clamp(0, 1).float()


def parse_edits(edit: str | Sequence[str] | None, alpha: float | Sequence[float] | None = None,
                ramp: Sequence[float] | float | None = None, default_alpha: float = 0.5,
                keep: str | Sequence[str] | None = None) -> EditRequest | None:
    """The edit options as the command line gives them -> an `EditRequest` (None: no edit).

    `edit` is a name or a list of names; `alpha` a number or a list of the same length (a single number applies
    to every name; none: `default_alpha`); `ramp` is [start, end] in seconds (a single number: [0, end]); `keep`
    a name or a list of names the edits must leave alone. Names are checked against the library later
    (`AttributeClassifier.edit`); values here.
    """
    names = [edit] if isinstance(edit, str) else list(edit or [])
    kept = [keep] if isinstance(keep, str) else list(keep or [])
    if not names:
        if alpha is not None and not (isinstance(alpha, Sequence) and not alpha):
            raise InputError("alpha is given but no edit: add edit=NAME (e.g. edit=Eyeglasses)")
        if kept:
            raise InputError("keep is given but no edit: add edit=NAME (e.g. edit=Blond_Hair keep=[Male])")
        return None
    if any(not isinstance(n, str) or not n for n in kept):
        raise InputError(f"keep must be attribute names, got {kept}")
    if any(not isinstance(n, str) or not n for n in names):
        raise InputError(f"edit must be attribute names, got {names}")
    values = [default_alpha] if alpha is None else ([alpha] if not isinstance(alpha, Sequence) or isinstance(
        alpha, str) else list(alpha))  # fmt: skip
    if len(values) == 1 and len(names) > 1 and not isinstance(alpha, Sequence):
        values = values * len(names)
    if len(values) != len(names):
        raise InputError(f"{len(names)} edits ({', '.join(names)}) but {len(values)} alphas ({values}): give one "
                         "alpha per edit")  # fmt: skip
    alphas = {}
    for name, value in zip(names, values, strict=True):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(f"alpha for {name} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise InputError(f"alpha={value} for {name} is not a finite number")
        if name in alphas:
            raise InputError(f"edit {name} is given twice")
        alphas[name] = number
    return EditRequest(alphas, parse_ramp(ramp), tuple(dict.fromkeys(kept)))


def parse_ramp(ramp: Sequence[float] | float | None) -> tuple[float, float] | None:
    if ramp is None:
        return None
    values = [ramp] if not isinstance(ramp, Sequence) or isinstance(ramp, str) else list(ramp)
    if len(values) == 1:
        values = [0.0, values[0]]
    try:
        start, end = (float(v) for v in values)
    except (TypeError, ValueError):
        raise InputError(f"ramp must be [start, end] in seconds, got {ramp!r}") from None
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
        raise InputError(f"ramp must be [start, end] seconds with 0 <= start < end, got [{start:g}, {end:g}]")
    return start, end


@dataclass
class FaceEditTalkerOutput:
    """What one request produced. `frames` is None when the frames were streamed to a file (`path`)."""

    path: Path | None
    num_frames: int
    fps: int
    duration: float  # seconds of speech
    crop: FaceCrop
    landmarks: np.ndarray  # (T, 478, 3) predicted landmarks, normalised to the crop square
    z_sem: torch.Tensor  # (1, Z) unedited code of the reference
    edited_z_sem: torch.Tensor  # (1, Z) or (1, T, Z) the code(s) the frames were generated with
    frames: np.ndarray | None = None  # (T, H, W, 3) uint8 when no output path was given
    landmarks_path: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase (PHASES)


# The phases of one request, as `FaceEditTalkerOutput.timings` reports them (scripts/benchmark_infer.py).
PHASES = ("reference", "audio", "denoising", "decoding", "writing")


class PhaseTimer:
    """Wall-clock seconds per phase, summed over the times a phase is entered (decoding and writing alternate).
    On CUDA the device is synchronised at each boundary, so a phase is charged for its own kernels."""

    def __init__(self, device: torch.device):
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[phase] += time.perf_counter() - start


@dataclass
class EditedPortrait:
    """One edited portrait: the input, its face crop, the crop reconstructed and edited (R, R, 3), and the edit
    pasted back into the whole portrait (H, W, 3); all uint8."""

    portrait: np.ndarray
    crop: FaceCrop
    face: np.ndarray
    reconstruction: np.ndarray
    edited: np.ndarray
    pasted: np.ndarray


class FaceEditTalkerPipeline(PretrainedFolder):
    """Alg. 4 on one model folder: `pipe(portrait, audio, edit=..., alpha=..., output=...)`."""

    config_file = MODEL_INDEX
    description = "FaceEditTalker model"
    parts = {"video_model": TalkingHeadModel, "landmark_predictor": LandmarkPredictor,
             "attribute_library": AttributeClassifier, "face_upsampler": FaceUpsampler}  # fmt: skip
    optional_parts = ("attribute_library", "face_upsampler")

    def __init__(self, video_model: TalkingHeadModel, landmark_predictor: LandmarkPredictor,
                 audio_encoder: CachedAudioEncoder, attribute_library: AttributeClassifier | None = None,
                 decode_batch_size: int = 8, edit_guidance: float = 0.0, edit_region: bool = False,
                 face_upsampler: FaceUpsampler | None = None,
                 edit_guidance_interval: Sequence[float] = (0.0, 1.0), edit_reference: bool = False):
        self.video_model = video_model.eval()
        self.landmark_predictor = landmark_predictor.eval()
        self.audio_encoder = audio_encoder
        self.attribute_library = attribute_library.eval() if attribute_library is not None else None
        # Decodes the video model's faces to `resolution`; None (or `pipe.face_upsampler = None`): its own size.
        self.face_upsampler = face_upsampler.eval() if face_upsampler is not None else None
        self.decode_batch_size = decode_batch_size
        # The edit guidance of every edit unless a call gives its own: 0 is the paper's Eq. 3 alone
        # (`edit_guided`; a model folder may save the value its recipe was measured with).
        self.edit_guidance = check_edit_guidance(edit_guidance)
        # The noise levels t / T in [lo, hi) where that guidance acts (elsewhere s = 0); (0, 1): every step.
        self.edit_guidance_interval = check_edit_guidance_interval(edit_guidance_interval)
        # Confine edits of attributes with a landmark region (landmarks/regions.py) to it; False: the paper's.
        self.edit_region = check_edit_region(edit_region)
        # Animate the edited reference: Z_T by inverting the edited still under the same edit (`edited_reference`;
        # beyond the paper; False: the paper's Z_T of the unedited reference).
        self.edit_reference = check_flag("edit_reference", edit_reference)
        if landmark_predictor.config.audio_dim != audio_encoder.dim:
            raise InputError(f"the landmark predictor takes {landmark_predictor.config.audio_dim}-dim audio features, "
                             f"the audio encoder gives {audio_encoder.dim}")  # fmt: skip

    # ----- persistence -----------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return {"audio_encoder": self.audio_encoder.describe(), "decode_batch_size": self.decode_batch_size,
                "edit_guidance": self.edit_guidance, "edit_guidance_interval": list(self.edit_guidance_interval),
                "edit_region": self.edit_region, "edit_reference": self.edit_reference}

    @classmethod
    def _from_parts(cls, directory: Path, config: dict, parts: dict, audio_encoder: str | None = None,
                    device: str | torch.device = "cpu", **_) -> FaceEditTalkerPipeline:
        if not isinstance(config.get("audio_encoder"), dict):
            raise InputError(f"incomplete {cls.description} folder {directory}: {MODEL_INDEX} has no audio_encoder")
        encoder = build_audio_encoder(config["audio_encoder"], device=device, model_name_or_path=audio_encoder)
        return cls(audio_encoder=encoder, decode_batch_size=int(config.get("decode_batch_size", 8)),
                   edit_guidance=config.get("edit_guidance", 0.0), edit_region=config.get("edit_region", False),
                   edit_guidance_interval=config.get("edit_guidance_interval", (0.0, 1.0)),
                   edit_reference=config.get("edit_reference", False), **parts)  # fmt: skip

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu",
                        vae: str | None = None, audio_encoder: str | None = None,
                        upsample: bool = True) -> FaceEditTalkerPipeline:
        """Load a model folder; `vae` and `audio_encoder` replace where the VAE / wav2vec2 weights are found;
        `upsample=False` leaves out the folder's face upsampler (faces at the video model's own resolution)."""
        upsample = check_flag("upsample", upsample)  # before any weights are read
        pipe = super().from_pretrained(directory, device=device, autoencoder_path=vae, audio_encoder=audio_encoder)
        if not upsample:
            pipe.face_upsampler = None
        return pipe.to(device)

    def to(self, device: str | torch.device) -> FaceEditTalkerPipeline:
        for module in (self.video_model, self.landmark_predictor, self.attribute_library, self.face_upsampler):
            if module is not None:
                module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.video_model.unet.parameters()).device

    def set_invert_steps(self, invert_steps: int) -> None:
        """Invert references with `invert_steps` from now on instead of the model's saved number (cost: steps x one
        window's frames, once per request; on the trailing grid more steps give a truer Z_T, README "Steps")."""
        check_invert_steps(self.video_model.ddim, invert_steps)
        self.video_model.invert_steps = invert_steps

    @property
    def resolution(self) -> int:
        """The side of the generated face crops: the video model's, times the face upsampler's scale if present."""
        scale = self.face_upsampler.scale if self.face_upsampler is not None else 1
        return self.video_model.resolution * scale

    def decode(self, z0: torch.Tensor) -> torch.Tensor:
        """Z0 (B, C, h, w) -> faces (B, 3, resolution, resolution) in [-1, 1]: the image decoder, then the face
        upsampler if the model has one."""
        faces = self.video_model.autoencoder.decode(z0)  # (B, 3, R, R)
        return faces if self.face_upsampler is None else self.face_upsampler.upsample(faces)

    @property
    def attribute_names(self) -> list[str]:
        return self.attribute_library.names if self.attribute_library is not None else []

    # ----- Alg. 4 ----------------------------------------------------------------------------------------
    def check_inputs(self, edits: EditRequest | None, steps: int | None, precision: str) -> None:
        if edits is not None:
            if self.attribute_library is None:
                raise InputError("this model has no attribute library (attribute_library/), so it cannot edit; "
                                 "drop edit= or use a model exported with attributes=")  # fmt: skip
            self.attribute_library.edit(torch.zeros(1, self.attribute_library.config.z_dim), edits.alphas,
                                        edits.keep)
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise InputError(f"steps must be a positive whole number, got {steps!r}")
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")

    def edit_settings(self, edit_guidance: float | None, edit_region: bool | None,
                      edit_guidance_interval: Sequence[float] | None = None
                      ) -> tuple[float, bool, tuple[float, float]]:
        """A request's (edit_guidance, edit_region, edit_guidance_interval), checked; None takes the model's."""
        return (self.edit_guidance if edit_guidance is None else check_edit_guidance(edit_guidance),
                self.edit_region if edit_region is None else check_edit_region(edit_region),
                self.edit_guidance_interval if edit_guidance_interval is None
                else check_edit_guidance_interval(edit_guidance_interval))  # fmt: skip

    def edit_mask(self, edits: EditRequest | None, landmarks: np.ndarray, size: int, region: bool
                  ) -> torch.Tensor | None:
        """The edit's region per frame (1, T, 1, size, size) from crop-frame landmarks (T, 478, 3), or None: no
        edit, `region` off, or an edited attribute without a region."""
        if edits is None or not region:
            return None
        masks = region_masks(landmarks, edits.alphas, size)  # (T, 1, h, w) or None: an attribute without a region
        return None if masks is None else masks[None].to(self.device)

    def prepare_portrait(self, portrait: str | os.PathLike | np.ndarray, face: str = "only"
                         ) -> tuple[np.ndarray, FaceCrop, torch.Tensor]:
        """The portrait (H, W, 3) uint8, its face crop, and x_ref (1, 3, R, R) in [-1, 1]."""
        image, crop, x_ref = crop_portrait(portrait, self.video_model.resolution, face)
        return image, crop, x_ref.to(self.device)

    def prepare_audio(self, audio: str | os.PathLike | np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """A 16 kHz mono waveform (checked to be speech) and its features A^{1:T} (T, D), T = ceil(duration x 25)."""
        source = "the audio"
        if not isinstance(audio, np.ndarray):
            source = str(audio)
            audio = load_audio(audio)
        check_speech(audio, SAMPLE_RATE, source)
        return audio, self.audio_encoder(audio)

    @torch.no_grad()
    def predict_landmarks(self, features: torch.Tensor, reference_landmarks: np.ndarray) -> np.ndarray:
        """P_ldm: (T, D) features and (478, 3) crop-frame landmarks -> (T, 478, 3) crop-frame landmarks."""
        reference = torch.from_numpy(reference_landmarks).float()[None].to(self.device)
        sequence = predict_landmarks(self.landmark_predictor, features[None].to(self.device), reference)
        return sequence[0].float().cpu().numpy()

    def edited_codes(self, z_sem: torch.Tensor, edits: EditRequest | None, num_frames: int) -> torch.Tensor:
        """Eq. 3 once per request: (1, Z) unedited -> (1, Z) edited, or (1, T, Z) when the edit ramps."""
        if edits is None:
            return z_sem
        delta = self.attribute_library.edit_direction(z_sem.float(), edits.alphas, edits.keep).to(z_sem.dtype)
        if edits.ramp is None:
            return z_sem + delta
        strength = edits.strength(num_frames).to(z_sem.device, z_sem.dtype)  # (T,)
        return z_sem[:, None] + strength[None, :, None] * delta[:, None]  # (1, T, Z)

    @torch.no_grad()
    def __call__(
        self,
        portrait: str | os.PathLike | np.ndarray,
        audio: str | os.PathLike | np.ndarray,
        edit: str | Sequence[str] | None = None,
        alpha: float | Sequence[float] | None = None,
        ramp: Sequence[float] | float | None = None,
        output: str | os.PathLike | None = None,
        steps: int | None = None,
        seed: int | None = 0,
        precision: str = "fp32",
        paste_back: bool = True,
        face: str = "only",
        landmarks_output: str | os.PathLike | None = None,
        progress: bool = True,
        edit_guidance: float | None = None,
        edit_region: bool | None = None,
        keep: str | Sequence[str] | None = None,
        edit_guidance_interval: Sequence[float] | None = None,
        edit_reference: bool | None = None,
    ) -> FaceEditTalkerOutput:
        """Generate the talking video of `portrait` (path or (H, W, 3) uint8) speaking `audio` (path or 16 kHz
        mono waveform). With `output` the frames are streamed into that mp4 (H.264 + AAC, 25 fps, written
        atomically); without it they are returned. `landmarks_output` writes a second video: the frames beside
        the landmark images that drove them. `edit_guidance` amplifies the edit, `edit_region` confines it to the
        attribute's region in every frame (None: the model's; `edit_guided`), each at the cost of a second denoiser
        pass per step; `edit_guidance_interval` [lo, hi) limits the guidance to steps with lo <= t / T < hi; `keep`
        names attributes the edit must not move (`AttributeClassifier.edit`). `edit_reference` animates the edited
        reference (`edited_reference`; None: the model's, for edits without a ramp) instead of the unedited one's
        Z_T."""
        # 1. Check inputs (every option before any heavy work).
        edits = parse_edits(edit, alpha, ramp, keep=keep)
        self.check_inputs(edits, steps, precision)
        guidance, region, interval = self.edit_settings(edit_guidance, edit_region, edit_guidance_interval)
        if edit_reference is None:  # the model's default anchors edits at full strength only
            anchor = self.edit_reference and edits is not None and edits.ramp is None
        else:
            anchor = check_flag("edit_reference", edit_reference) and edits is not None
            if anchor and edits.ramp is not None:
                raise InputError("edit_reference animates the edited reference at full strength: it does not "
                                 "combine with a ramp")  # fmt: skip
        if seed is not None:
            torch.manual_seed(seed)  # DDIM here is deterministic (eta = 0); the seed covers any randomness left
        model = self.video_model
        timer = PhaseTimer(self.device)
        autocast = self._autocast(precision)
        # 2. Encode the reference and the speech.
        with timer("reference"):
            image, crop, x_ref = self.prepare_portrait(portrait, face)
        with timer("audio"):
            waveform, features = self.prepare_audio(audio)
            num_frames = features.shape[0]
            landmarks = self.predict_landmarks(features, crop.landmarks)  # (T, 478, 3)
        size = model.landmark_image_size

        def landmark_images(index: tuple[slice, slice]) -> torch.Tensor:
            """Landmark images of a slice of frames, drawn when a window needs them: (1, W, 3, S, S) in [0, 1]."""
            drawn = render_sequence(landmarks[index[1]], size)  # (W, S, S, 3) uint8
            return torch.from_numpy(drawn).permute(0, 3, 1, 2)[None].float().div(255).to(self.device)

        reference_image = self.landmark_image(crop.landmarks)  # (1, 3, S, S)
        # 3. Prepare the codes: z_sem (edited once per request), Z_T by inversion with the unedited z_sem.
        with timer("reference"), autocast:
            z_sem, z_T = model.encode_reference(x_ref, reference_image)
            codes = self.edited_codes(z_sem, edits, num_frames)
            if anchor:
                z_T = self.edited_reference(z_T, z_sem, codes, edits, crop.landmarks, reference_image, steps,
                                            guidance, region, interval)  # fmt: skip
        # 4. Denoise all frames, window by window.
        with timer("denoising"), autocast:
            mask = self.edit_mask(edits, landmarks, z_T.shape[-1], region)  # (1, T, 1, h, w) or None
            z0 = model.denoise(z_T, codes, landmark_images, reference_image, num_frames, steps, progress=progress,
                               unedited_z_sem=z_sem if edits is not None else None, edit_guidance=guidance,
                               edit_mask=mask, edit_guidance_interval=interval)  # fmt: skip
        # 5. Decode in batches, paste back, stream to the writer.
        # The pasted region covers the face in every predicted frame (an open jaw reaches below the reference's).
        blend = PasteBack(image, crop, landmarks=np.concatenate([crop.landmarks[None], landmarks])) if paste_back \
            else None
        frames: list[np.ndarray] | None = [] if output is None else None
        with contextlib.ExitStack() as stack:
            writer = None if output is None else stack.enter_context(
                VideoWriter(output, fps=VIDEO_FPS, audio=waveform, sample_rate=SAMPLE_RATE))  # fmt: skip
            side_writer = None if landmarks_output is None else stack.enter_context(
                VideoWriter(landmarks_output, fps=VIDEO_FPS, audio=waveform, sample_rate=SAMPLE_RATE))  # fmt: skip
            batches = range(0, num_frames, self.decode_batch_size)
            for start in tqdm(batches, desc="decoding", disable=not progress, leave=False):
                part = slice(start, min(start + self.decode_batch_size, num_frames))
                with timer("decoding"):
                    with autocast:
                        decoded = self.decode(z0[0, part])  # (b, 3, R', R') in [-1, 1]
                    faces = to_uint8(decoded.float())
                    pasted = [blend(face_frame) for face_frame in faces] if blend is not None else list(faces)
                with timer("writing"):
                    for offset, frame in enumerate(pasted):
                        if writer is not None:
                            writer.write(frame)
                        else:
                            frames.append(frame)
                        if side_writer is not None:
                            side_writer.write(_beside(frame, landmarks[start + offset], size))
            with timer("writing"):
                stack.close()  # flush the encoders and rename the files into place
        return FaceEditTalkerOutput(
            path=Path(output) if output is not None else None, num_frames=num_frames, fps=VIDEO_FPS,
            duration=len(waveform) / SAMPLE_RATE, crop=crop, landmarks=landmarks, z_sem=z_sem.float().cpu(),
            edited_z_sem=codes.float().cpu(), frames=np.stack(frames) if frames is not None else None,
            landmarks_path=Path(landmarks_output) if landmarks_output is not None else None, timings=timer.seconds,
        )  # fmt: skip

    @torch.no_grad()
    def edit_image(
        self,
        portrait: str | os.PathLike | np.ndarray,
        edit: str | Sequence[str] | None,
        alpha: float | Sequence[float] | None = None,
        steps: int | None = None,
        face: str = "only",
        edit_guidance: float | None = None,
        edit_region: bool | None = None,
        keep: str | Sequence[str] | None = None,
        edit_guidance_interval: Sequence[float] | None = None,
    ) -> EditedPortrait:
        """Fig. 3 on one portrait through the video model: the crop's z_sem edited (Eq. 3) and decoded with the
        crop's own Z_T, driven by its own landmarks (a still window, as in the inversion); frame 0 is kept."""
        edits = parse_edits(edit, alpha, keep=keep)
        if edits is None:
            raise InputError("give an edit, e.g. edit=Eyeglasses alpha=0.8")
        self.check_inputs(edits, steps, "fp32")
        guidance, region, interval = self.edit_settings(edit_guidance, edit_region, edit_guidance_interval)
        image, crop, x_ref = self.prepare_portrait(portrait, face)
        reference_image = self.landmark_image(crop.landmarks)
        z_sem, z_T = self.video_model.encode_reference(x_ref, reference_image)
        reconstruction = self.decode_still(z_T, z_sem, reference_image, steps)
        mask = self.edit_mask(edits, crop.landmarks[None], z_T.shape[-1], region)  # (1, 1, 1, h, w) or None
        edited = self.decode_still(z_T, self.edited_codes(z_sem, edits, 1), reference_image, steps,
                                   unedited_z_sem=z_sem, edit_guidance=guidance, edit_mask=mask,
                                   edit_guidance_interval=interval)  # fmt: skip
        return EditedPortrait(portrait=image, crop=crop, face=crop_face(image, crop, self.resolution),
                              reconstruction=reconstruction, edited=edited, pasted=PasteBack(image, crop)(edited))

    @torch.no_grad()
    def interpolate(self, a: str | os.PathLike | np.ndarray, b: str | os.PathLike | np.ndarray, count: int = 5,
                    steps: int | None = None, face: str = "only") -> list[np.ndarray]:
        """Fig. 7 as DiffAE: `count` faces (R, R, 3) uint8 from portrait a's face to b's, z_sem lerped and Z_T
        slerped (Z_T is Gaussian-like, and a lerp would shrink its norm midway), each driven by the lerped
        landmarks. The ends are a's and b's reconstructions."""
        if not isinstance(count, int) or count < 2:
            raise InputError(f"the interpolation needs at least 2 faces, got {count!r}")
        self.check_inputs(None, steps, "fp32")
        ends = []
        for portrait in (a, b):
            _, crop, x_ref = self.prepare_portrait(portrait, face)
            z_sem, z_T = self.video_model.encode_reference(x_ref, self.landmark_image(crop.landmarks))
            ends.append((crop.landmarks, z_sem, z_T))
        (landmarks_a, z_sem_a, z_T_a), (landmarks_b, z_sem_b, z_T_b) = ends
        faces = []
        for t in np.linspace(0.0, 1.0, count):
            landmark_image = self.landmark_image((1 - t) * landmarks_a + t * landmarks_b)
            faces.append(self.decode_still(slerp(z_T_a, z_T_b, float(t)), torch.lerp(z_sem_a, z_sem_b, float(t)),
                                           landmark_image, steps))  # fmt: skip
        return faces

    @torch.no_grad()
    def edited_reference(self, z_T: torch.Tensor, z_sem: torch.Tensor, edited_z_sem: torch.Tensor,
                         edits: EditRequest, landmarks: np.ndarray, landmark_image: torch.Tensor,
                         steps: int | None, edit_guidance: float, edit_region: bool,
                         edit_guidance_interval: tuple[float, float]) -> torch.Tensor:
        """Z_T of the edited reference (beyond the paper): Fig. 3's edited still (`edit_image`: the reference's
        Z_T decoded with the edited code on a still window), inverted again under the same edit. The video then
        starts from noise that already holds the attribute instead of asking the edited z_sem alone to draw it
        on moving frames. Crop-frame `landmarks` (478, 3) and their landmark image (1, 3, S, S); returns
        (1, 1, C, h, w)."""
        mask = self.edit_mask(edits, landmarks[None], z_T.shape[-1], edit_region)  # (1, 1, 1, h, w) or None
        edit = {"unedited_z_sem": z_sem, "edit_guidance": edit_guidance, "edit_mask": mask,
                "edit_guidance_interval": edit_guidance_interval}  # fmt: skip
        z0 = self.still_latents(z_T, edited_z_sem, landmark_image, steps, **edit)
        # Inverted with the denoiser that samples the video (guided, the region on the unedited code): inverting
        # under the edited code alone, the frame outside the region, sampled on the unedited code, changed colour.
        return self.video_model.invert_still(z0, edited_z_sem, landmark_image, **edit)

    def landmark_image(self, landmarks: np.ndarray) -> torch.Tensor:
        """Crop-frame landmarks (478, 3) -> the landmark image L (1, 3, S, S) in [0, 1] on the device."""
        drawn = render_sequence(landmarks[None], self.video_model.landmark_image_size)
        return torch.from_numpy(drawn).permute(0, 3, 1, 2).float().div(255).to(self.device)

    @torch.no_grad()
    def decode_still(self, z_T: torch.Tensor, z_sem: torch.Tensor, landmark_image: torch.Tensor,
                     steps: int | None = None, unedited_z_sem: torch.Tensor | None = None,
                     edit_guidance: float = 0.0, edit_mask: torch.Tensor | None = None,
                     edit_guidance_interval: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
        """One face (R, R, 3) uint8 from Z_T and z_sem (1, Z), driven by one landmark image on a still window
        (as in the inversion); frame 0 is kept. An edited z_sem may be guided (`TalkingHeadModel.denoise`)."""
        z0 = self.still_latents(z_T, z_sem, landmark_image, steps, unedited_z_sem, edit_guidance, edit_mask,
                                edit_guidance_interval)  # fmt: skip
        return to_uint8(self.decode(z0[:, 0]).float())[0]

    @torch.no_grad()
    def still_latents(self, z_T: torch.Tensor, z_sem: torch.Tensor, landmark_image: torch.Tensor,
                      steps: int | None = None, unedited_z_sem: torch.Tensor | None = None,
                      edit_guidance: float = 0.0, edit_mask: torch.Tensor | None = None,
                      edit_guidance_interval: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
        """The clean latents (1, F, C, h, w) of a still window driven by one landmark image (1, 3, S, S)."""
        model = self.video_model
        still = landmark_image[:, None].expand(1, model.num_frames, -1, -1, -1)
        return model.denoise(z_T, z_sem, still, landmark_image, model.num_frames, steps,
                             unedited_z_sem=unedited_z_sem, edit_guidance=edit_guidance, edit_mask=edit_mask,
                             edit_guidance_interval=edit_guidance_interval)  # fmt: skip

    def _autocast(self, precision: str) -> contextlib.AbstractContextManager:
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[precision])


def check_edit_guidance(scale: object) -> float:
    """The edit guidance scale s >= 0 (0: Eq. 3 alone), or an `InputError`."""
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale) \
            or not 0 <= scale <= MAX_EDIT_GUIDANCE:
        raise InputError(f"edit_guidance must be a number in [0, {MAX_EDIT_GUIDANCE:g}], got {scale!r}")
    return float(scale)


def check_edit_guidance_interval(interval: object) -> tuple[float, float]:
    """[lo, hi) with 0 <= lo < hi <= 1: the noise levels t / T where edit guidance acts, or an `InputError`."""
    numbers = isinstance(interval, list | tuple) and len(interval) == 2 \
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in interval)
    if not numbers or not 0 <= interval[0] < interval[1] <= 1:
        raise InputError(f"edit_guidance_interval must be [lo, hi] with 0 <= lo < hi <= 1 (fractions of the noise "
                         f"levels), got {interval!r}")
    return float(interval[0]), float(interval[1])


def check_edit_region(value: object) -> bool:
    """`edit_region` must be true or false, or an `InputError`."""
    return check_flag("edit_region", value)


def check_flag(name: str, value: object) -> bool:
    """A true / false option, or an `InputError` naming it."""
    if not isinstance(value, bool):
        raise InputError(f"{name} must be true or false, got {value!r}")
    return value


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of two tensors of one shape, as flat vectors (t = 0: a, t = 1: b, exactly)."""
    if t in (0.0, 1.0):
        return a if t == 0.0 else b
    x, y = a.flatten().double(), b.flatten().double()
    cos = (x @ y / (x.norm() * y.norm()).clamp_min(1e-12)).clamp(-1, 1)
    angle = torch.arccos(cos)
    if angle < 1e-6:  # (nearly) parallel: the lerp is the same curve
        mixed = torch.lerp(x, y, t)
    else:
        mixed = (torch.sin((1 - t) * angle) * x + torch.sin(t * angle) * y) / torch.sin(angle)
    return mixed.to(a.dtype).view_as(a)


def crop_portrait(portrait: str | os.PathLike | np.ndarray, resolution: int, face: str = "only"
                  ) -> tuple[np.ndarray, FaceCrop, torch.Tensor]:
    """A portrait (file or (H, W, 3) uint8) -> the image, its face crop and the crop (1, 3, R, R) in [-1, 1]."""
    source = "the portrait"
    if not isinstance(portrait, np.ndarray):
        source = str(portrait)
        portrait = load_portrait(portrait)
    crop = find_face(portrait, face=face, source=source)
    face_image = crop_face(portrait, crop, resolution)  # (R, R, 3) uint8
    return portrait, crop, torch.from_numpy(face_image).permute(2, 0, 1)[None].float() / 127.5 - 1


def _beside(frame: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """A frame and, on its right, the landmark image that drove it, scaled to the frame's height."""
    drawn = render_sequence(landmarks[None], size)[0]
    height = frame.shape[0]
    drawn = cv2.resize(drawn, (height, height), interpolation=cv2.INTER_NEAREST)
    return np.concatenate([frame, drawn], axis=1)


# ----- assembling a model folder from the stage runs ---------------------------------------------------------
def assemble_model(video: str | os.PathLike, landmarks: str | os.PathLike, output: str | os.PathLike,
                   attributes: str | os.PathLike | None = None, overwrite: bool = False, copy_vae: bool = True,
                   edit_guidance: float = 0.0, edit_region: bool = False,
                   upsampler: str | os.PathLike | None = None,
                   edit_guidance_interval: Sequence[float] = (0.0, 1.0), edit_reference: bool = False) -> Path:
    """One model folder from the stage exports: the stage-3 video export (`talking_head.json`, E_sem, eps_theta,
    E_ldm), the stage-3 landmark export (`landmark_predictor/`, `audio_encoder.json`) and optionally the stage-2
    export (`attribute_classifier/`). Files are copied (no weights are re-saved); the folder is written under a
    temporary name and renamed when complete. A missing or incomplete export is an `InputError`.

    With `copy_vae`, a VAE that the video export names by a local folder (stage 0's small world VAE, or a
    downloaded SD-VAE) is copied into `video_model/autoencoder/` and named relatively, so the model folder works
    on any machine; a hub id stays a reference (and `copy_vae=False` keeps any VAE a reference).
    `edit_guidance`, `edit_guidance_interval`, `edit_region` and `edit_reference` are the model's edit defaults
    (`FaceEditTalkerPipeline`; 0, every step, False and False: the paper's Eq. 3). `upsampler` is a stage-0 upsampler
    export (`face_upsampler/`, beyond the paper) whose x4 decoder the model then applies to every generated face."""
    from faceedittalker.models.audio_encoder import audio_encoder_settings
    from faceedittalker.stages.stage3_landmarks import AUDIO_ENCODER_FILE

    edit_guidance, edit_region = check_edit_guidance(edit_guidance), check_edit_region(edit_region)
    edit_guidance_interval = check_edit_guidance_interval(edit_guidance_interval)
    edit_reference = check_flag("edit_reference", edit_reference)
    video_dir, video_config = TalkingHeadModel.read_config(video)
    vae = dict(video_config.get("autoencoder") or {})
    vae_dir = None
    if vae.get("kind") == "vae" and vae.get("pretrained"):  # a model folder's own copy is named relatively
        vae_dir = Path(resolve_vae_reference(vae["pretrained"], video_dir)).expanduser() / (vae.get("subfolder") or "")
    copy_vae = copy_vae and vae_dir is not None and vae_dir.is_dir()
    for name in TalkingHeadModel.parts:
        _check_weights(video_dir / name, f"stage-3 video export {video_dir}")
    landmark_dir = Path(landmarks).expanduser()
    _check_weights(landmark_dir / "landmark_predictor", f"stage-3 landmark export {landmark_dir}")
    settings_file = landmark_dir / AUDIO_ENCODER_FILE
    if not settings_file.is_file():
        raise InputError(f"incomplete stage-3 landmark export {landmark_dir}: no {AUDIO_ENCODER_FILE}")
    try:
        audio_settings = audio_encoder_settings(json.loads(settings_file.read_text()))
    except json.JSONDecodeError as err:
        raise InputError(f"cannot read {settings_file}: {err}") from err
    attribute_dir = None
    if attributes:
        attribute_dir = Path(attributes).expanduser()
        if (attribute_dir / "attribute_classifier").is_dir():
            attribute_dir = attribute_dir / "attribute_classifier"
        _check_weights(attribute_dir, f"stage-2 export {attributes}")
    upsampler_dir = upsampler_folder(upsampler) if upsampler else None
    with atomic_folder(output, overwrite) as tmp:
        target = tmp / "video_model"
        target.mkdir()
        shutil.copy2(video_dir / TalkingHeadModel.config_file, target)
        for name in TalkingHeadModel.parts:
            shutil.copytree(video_dir / name, target / name)
        if copy_vae:
            shutil.copytree(vae_dir, target / VAE_FOLDER)
            write_json_atomic(target / TalkingHeadModel.config_file,
                              {**video_config, "autoencoder": {**vae, "pretrained": VAE_FOLDER, "subfolder": None}})
        shutil.copytree(landmark_dir / "landmark_predictor", tmp / "landmark_predictor")
        if attribute_dir is not None:
            shutil.copytree(attribute_dir, tmp / "attribute_library")
        if upsampler_dir is not None:
            shutil.copytree(upsampler_dir, tmp / "face_upsampler")
        index = {"_class_name": FaceEditTalkerPipeline.__name__, "format_version": FORMAT_VERSION,
                 "faceedittalker_version": __version__, "video_model": TalkingHeadModel.__name__,
                 "landmark_predictor": LandmarkPredictor.__name__, "audio_encoder": audio_settings,
                 "decode_batch_size": 8, "edit_guidance": edit_guidance,
                 "edit_guidance_interval": list(edit_guidance_interval), "edit_region": edit_region,
                 "edit_reference": edit_reference}  # fmt: skip
        if attribute_dir is not None:
            index["attribute_library"] = AttributeClassifier.__name__
        if upsampler_dir is not None:
            index["face_upsampler"] = FaceUpsampler.__name__
        write_json_atomic(tmp / MODEL_INDEX, index)
    return Path(output)


@torch.no_grad()
def encode_faces(video_model: TalkingHeadModel, images: Sequence[str | os.PathLike], crop: bool = True,
                 face: str = "only", batch_size: int = 16) -> torch.Tensor:
    """z_sem (N, Z) of image files: each portrait's face cropped as for inference (`crop`), or (`crop=False`)
    the images taken as face crops already, centre-cropped and resized as the training images are. An image
    that cannot be read, or (cropping) has no face, is an `InputError` naming it."""
    from PIL import UnidentifiedImageError

    from faceedittalker.data.images import load_image

    resolution = video_model.resolution
    faces = []
    for path in images:
        if crop:
            faces.append(crop_portrait(path, resolution, face)[2][0])
            continue
        try:
            faces.append(load_image(path, resolution))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise InputError(f"cannot read image {path}: {err}") from err
    return semantic_codes(video_model, torch.stack(faces), batch_size)


@torch.no_grad()
def semantic_codes(video_model: TalkingHeadModel, faces: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """E_sem of face crops (N, 3, R, R) in [-1, 1], batch by batch on the model's device -> z_sem (N, Z) on the CPU."""
    device = next(video_model.unet.parameters()).device
    return torch.cat([video_model.semantic_encoder(faces[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(faces), batch_size)])


def add_attribute(model: str | os.PathLike, name: str, positive: Sequence[str | os.PathLike],
                  negative: Sequence[str | os.PathLike], output: str | os.PathLike | None = None,
                  overwrite: bool = False, crop: bool = True, face: str = "only", device: str = "cpu",
                  inverse_regularisation: float = 1.0) -> Path:
    """A user-defined attribute from example images with it (`positive`) and without it (`negative`), added to
    the attribute library of the model folder `model` (or of a copy at `output`), usable as `edit=<name>` like
    the 40. The library folder is replaced atomically; a model without one gets a library of this attribute."""
    directory, config = FaceEditTalkerPipeline.read_config(model)
    if output is not None and Path(output).expanduser().exists():
        raise InputError(f"{output} exists already; give a new output folder (or none, to add to {directory})")
    video_model = FaceEditTalkerPipeline.load_part(directory, "video_model").to(device).eval()
    library = FaceEditTalkerPipeline.load_part(directory, "attribute_library")
    check_new_attribute(name, library.names if library is not None else [], len(positive), len(negative), overwrite)
    codes = [encode_faces(video_model, images, crop, face) for images in (positive, negative)]
    if library is None:
        library = AttributeClassifier.from_examples(name, *codes, inverse_regularisation)
    else:
        library = library.with_attribute(name, *codes, inverse_regularisation, overwrite=overwrite)

    def write(folder: Path) -> None:
        with atomic_directory(folder / "attribute_library") as tmp:
            library.save_pretrained(tmp, safe_serialization=True)
        if config.get("attribute_library") != AttributeClassifier.__name__:
            write_json_atomic(folder / MODEL_INDEX, {**config, "attribute_library": AttributeClassifier.__name__})

    if output is None:
        write(directory)
        return directory
    with atomic_folder(output) as tmp:  # the copy appears complete, with the new attribute, or not at all
        shutil.copytree(directory, tmp, dirs_exist_ok=True)
        write(tmp)
    return Path(output).expanduser()


def add_upsampler(model: str | os.PathLike, upsampler: str | os.PathLike, output: str | os.PathLike | None = None
                  ) -> Path:
    """Put the face upsampler of a stage-0 upsampler export into the model folder `model` (replacing one it has),
    or into a copy at `output`; the folder is complete with it or unchanged. It is fully convolutional, so it runs
    on any video model's faces; it suits those whose size it was trained to upsample (`experiment=tiny/upsampler`:
    32 px faces to 128 px)."""
    directory, config = FaceEditTalkerPipeline.read_config(model)
    source = upsampler_folder(upsampler)

    def write(folder: Path) -> None:
        with atomic_directory(folder / "face_upsampler") as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
        write_json_atomic(folder / MODEL_INDEX, {**config, "face_upsampler": FaceUpsampler.__name__})

    if output is None:
        write(directory)
        return directory
    if Path(output).expanduser().exists():
        raise InputError(f"{output} exists already; give a new output folder (or none, to add to {directory})")
    with atomic_folder(output) as tmp:
        shutil.copytree(directory, tmp, dirs_exist_ok=True)
        write(tmp)
    return Path(output).expanduser()


def upsampler_folder(upsampler: str | os.PathLike) -> Path:
    """The `face_upsampler/` folder of a stage-0 upsampler export (or that folder itself), checked."""
    folder = Path(upsampler).expanduser()
    if (folder / "face_upsampler").is_dir():
        folder = folder / "face_upsampler"
    _check_weights(folder, f"stage-0 upsampler export {upsampler}")
    try:
        FaceUpsampler.from_pretrained(folder, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise InputError(f"cannot load the face upsampler in {folder}: {str(err).splitlines()[0]}") from err
    return folder


def _check_weights(folder: Path, what: str) -> None:
    """A part folder must hold config.json and safetensors weights."""
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        raise InputError(f"incomplete {what}: {folder.name}/ needs config.json and safetensors weights")
