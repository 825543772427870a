"""Writing and reading the talking-head videos of Alg. 4.

`VideoWriter` streams frames into an mp4: H.264 (libx264, yuv420p, CRF `crf`) at 25 fps with the speech as AAC,
the whole waveform, so the soundtrack is as long as the input audio. Audio is encoded alongside the frames
(interleaved, as players expect) and the file gets `+faststart` (the index first, so browsers start playing
before it is fully loaded). yuv420p needs even sides: an odd width or height is padded by repeating the last
column or row (nothing of the picture is lost). The file is written under a hidden temporary name in the same
folder and renamed when the writer is closed cleanly; when the `with` block raises, the temporary file is
removed and nothing is left behind.

Colours: frames are converted to BT.709 limited-range YUV and the stream is tagged so, which is what players
assume for HD video (untagged BT.601 conversion would shift colours in players that assume BT.709).
"""

from __future__ import annotations

import os
import secrets
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation

from faceedittalker.data.audio import SAMPLE_RATE, VIDEO_FPS, load_audio
from faceedittalker.data.clips import decode_frames
from faceedittalker.errors import InputError

AAC_FRAME = 1024  # samples per AAC frame
# swscale's default RGB <-> YUV conversion truncates and interpolates chroma coarsely: about -1 level on every
# channel after a round trip. Accurate rounding with full chroma interpolation has no such bias.
COLOUR_CONVERSION = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
CONTAINER_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


class VideoWriter:
    """An H.264 + AAC video written frame by frame (see module docstring). Use as a context manager:

        with VideoWriter("out.mp4", fps=25, audio=waveform) as writer:
            for frame in frames:  # (H, W, 3) uint8 RGB, all the same size
                writer.write(frame)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: int = VIDEO_FPS,
        audio: np.ndarray | None = None,
        sample_rate: int = SAMPLE_RATE,
        crf: int = 18,
        preset: str = "medium",
        audio_bitrate: int = 64_000,  # AAC-LC, mono speech
    ):
        self.path = Path(path).expanduser()
        if self.path.suffix.lower() not in CONTAINER_FORMATS:
            raise InputError(f"output video must end in {', '.join(CONTAINER_FORMATS)}: {self.path}")
        if not self.path.parent.is_dir():
            raise InputError(f"output folder not found: {self.path.parent}")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps, self.crf, self.preset = fps, crf, preset
        self.audio = None
        if audio is not None:
            audio = np.asarray(audio, dtype=np.float32)
            if audio.ndim != 1 or len(audio) == 0:
                raise ValueError(f"audio must be a non-empty mono waveform (N,), got shape {audio.shape}")
            self.audio = np.clip(audio, -1.0, 1.0)
        self.sample_rate = sample_rate
        self.audio_bitrate = audio_bitrate
        self.num_frames = 0
        self.size: tuple[int, int] | None = None  # (height, width) of the input frames
        self._audio_written = 0  # samples encoded so far
        # Hidden, unique, same folder (so the final rename is atomic); FFmpeg creates it with the usual permissions.
        self._partial = self.path.with_name(f".{self.path.stem}.{secrets.token_hex(4)}.partial{self.path.suffix}")
        self._container = None
        self._video = None
        self._sound = None
        self._closed = False
        try:
            self._container = av.open(
                str(self._partial), "w", format=CONTAINER_FORMATS[self.path.suffix.lower()],
                options={"movflags": "+faststart"},
            )
        except (av.FFmpegError, OSError) as err:  # e.g. a read-only folder
            self._partial.unlink(missing_ok=True)
            raise InputError(f"cannot write video {self.path}: {err}") from err

    def _open_streams(self, height: int, width: int) -> None:
        self._rate = Fraction(self.fps).limit_denominator(1001)
        video = self._container.add_stream("libx264", rate=self._rate)
        video.width, video.height = width + width % 2, height + height % 2
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(self.crf), "preset": self.preset}
        context = video.codec_context
        context.color_range = 1  # MPEG (limited) range
        context.color_primaries = context.color_trc = context.colorspace = 1  # BT.709
        self._video = video
        if self.audio is not None:
            sound = self._container.add_stream("aac", rate=self.sample_rate, layout="mono")
            sound.bit_rate = self.audio_bitrate
            self._sound = sound

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame; the first frame fixes the size."""
        if self._closed:
            raise ValueError("write() on a closed VideoWriter")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {frame.dtype} {tuple(frame.shape)}")
        if self.size is None:
            self.size = (frame.shape[0], frame.shape[1])
            self._open_streams(*self.size)
        elif frame.shape[:2] != self.size:
            raise ValueError(f"frame {self.num_frames} is {frame.shape[:2]}, the video is {self.size}")
        height, width = self.size
        if height % 2 or width % 2:
            frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        picture = picture.reformat(
            format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG", interpolation=COLOUR_CONVERSION
        )
        picture.pts = self.num_frames
        picture.time_base = 1 / self._rate
        self._mux(self._video.encode(picture))
        self.num_frames += 1
        # Keep the soundtrack level with the picture (interleaved file, no growing buffer).
        self._write_audio(round(self.num_frames * self.sample_rate / self.fps))

    def _write_audio(self, until: int | None) -> None:
        if self._sound is None:
            return
        stop = len(self.audio) if until is None else min(len(self.audio), until)
        while self._audio_written < stop:
            end = min(stop, self._audio_written + AAC_FRAME)
            # Whole AAC frames only, except at the very end.
            if until is not None and end - self._audio_written < AAC_FRAME:
                break
            chunk = self.audio[self._audio_written : end]
            samples = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            samples.sample_rate = self.sample_rate
            samples.pts = self._audio_written
            samples.time_base = Fraction(1, self.sample_rate)
            self._mux(self._sound.encode(samples))
            self._audio_written = end

    def _mux(self, packets) -> None:
        for packet in packets:
            self._container.mux(packet)

    def close(self) -> Path:
        """Finish the file and move it into place; returns its path."""
        if self._closed:
            return self.path
        if self.num_frames == 0:
            self.abort()
            raise ValueError(f"no frames written to {self.path}")
        try:
            self._mux(self._video.encode(None))
            self._write_audio(None)
            if self._sound is not None:
                self._mux(self._sound.encode(None))
            self._container.close()
            self._closed = True
            os.replace(self._partial, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Stop writing and remove the temporary file (the output path is left untouched)."""
        self._closed = True
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: S110 - the file is being thrown away anyway
                pass
            self._container = None
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):  # a writer dropped without close() must not leave its temporary file
        if not getattr(self, "_closed", True):
            self.abort()


def read_video(
    path: str | os.PathLike, sample_rate: int | None = SAMPLE_RATE
) -> tuple[np.ndarray, float, np.ndarray | None, int | None]:
    """All frames (T, H, W, 3) uint8 RGB, the frame rate, and the soundtrack as a mono float32 waveform at
    `sample_rate` (None: the stream's own rate), or (None, None) when there is none. For tests and evaluation:
    it holds the whole video in memory."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"video not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"no video stream in {path}")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            native_rate = container.streams.audio[0].codec_context.sample_rate if container.streams.audio else None
        frames = [
            frame.reformat(format="rgb24", interpolation=COLOUR_CONVERSION).to_ndarray()
            for _, frame in decode_frames(path)
        ]
    except (av.FFmpegError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read video {path}: {err}") from err
    if not frames:
        raise InputError(f"no frames in {path}")
    audio, rate = None, None
    if native_rate:
        rate = sample_rate or native_rate
        audio = load_audio(path, rate)
    return np.stack(frames), fps, audio, rate
