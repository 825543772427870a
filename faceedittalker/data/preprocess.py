"""Raw talking videos -> clip folders (DESIGN §4): 25 fps, 16 kHz mono, tracked face, smoothed square crop.

Each video goes through two passes, so memory stays flat however long it is:

1. decode at 25 fps (the source frame shown at each 1/25 s tick), track the face with the Face Landmarker in
   video mode on a downscaled copy, and split the video into clips (at most `clip_seconds`, also cut where the
   face jumps, i.e. at a shot change); every clip gets a crop box smoothed over time and the quality checks;
2. decode again and write the clips that passed: crop, resize, encode.

A clip folder `<output>/<clip_id>/` holds `frames.mp4` (H.264, yuv420p, CRF `crf`, 25 fps, size x size),
`audio.wav` (16 kHz mono PCM, exactly num_frames x 640 samples), `landmarks.npy` (T x 478 x 3 float32,
normalised to the crop as MediaPipe would report them on it), `poses.npy` (T x 4 x 4, `estimate_pose` on those
landmarks: for `normalise_pose(landmarks[t], poses[t], size)`) and `meta.json`. Clip ids are the video's path
under the input root with `/` replaced by `__`, plus `_NNN`. Folders are written under a temporary name and
renamed when complete; a video whose clips are all written gets a marker in `<output>/.done/`, so a second run
skips it. `<output>/report.json` lists every clip kept and every clip or video rejected, with the reason.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np
import soundfile
from scipy.ndimage import gaussian_filter1d
from tqdm import tqdm

from faceedittalker.data.audio import SAMPLE_RATE, SILENCE_DBFS, VIDEO_FPS, load_audio, rms_dbfs
from faceedittalker.errors import InputError
from faceedittalker.landmarks.detector import FaceLandmarker
from faceedittalker.landmarks.pose import DEFAULT_MODEL_PATH, estimate_pose
from faceedittalker.utils.files import find_files

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
DONE_DIR = ".done"
REPORT_NAME = "report.json"


@dataclass
class PreprocessSettings:
    """Every knob of the preprocessing (the `configs/preprocess.yaml` keys)."""

    size: int = 512  # output frame side in pixels
    fps: int = VIDEO_FPS
    sample_rate: int = SAMPLE_RATE
    clip_seconds: float = 10.0  # longer videos are split into clips of at most this length
    min_clip_seconds: float = 2.0  # shorter clips are rejected
    min_detection_rate: float = 0.9  # fraction of frames in which the face must be found
    min_face_size: float = 64.0  # median face height (landmark box, source pixels) below this: rejected
    crop_scale: float = 1.9  # crop side = this x the larger side of the face's landmark box
    crop_shift: float = 0.1  # crop centre moved up by this x face height (room for hair)
    smooth_seconds: float = 0.2  # Gaussian sigma of the crop-box smoothing over time
    cut_jump: float = 0.6  # a face-centre jump larger than this x face size between frames starts a new clip
    detect_max_side: int = 720  # frames are downscaled to this longest side for detection
    crf: int = 14  # H.264 quality of frames.mp4 (0 lossless, 14 visually lossless, 23 ffmpeg default)
    model_path: str = str(DEFAULT_MODEL_PATH)


@dataclass
class ClipPlan:
    """A clip found in pass 1: frame range, crop boxes, landmarks in source coordinates, verdict."""

    clip_id: str
    start: int  # first frame (at the output fps)
    stop: int  # one past the last frame
    boxes: np.ndarray | None = None  # (T, 3) x0, y0, side in source pixels
    reason: str | None = None  # why it is rejected; None = kept
    detection_rate: float = 0.0
    face_size: float = 0.0


@dataclass
class VideoReport:
    source: str
    kept: list[str] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)  # {"clip" or "video": ..., "reason": ...}
    skipped: bool = False  # done by an earlier run


def find_videos(root: Path) -> list[Path]:
    """Video files under `root` (any depth: HDTF's flat folder, VoxCeleb2's id/video/clip.mp4)."""
    return find_files(root, VIDEO_EXTENSIONS, "input folder", "videos")


def video_id(video: Path, root: Path) -> str:
    """A file-name-safe id unique within the input root: `id00012/abc/00001.mp4` -> `id00012__abc__00001`."""
    relative = video.relative_to(root).with_suffix("")
    return "__".join(relative.parts).replace(" ", "_")


def iter_frames_at_fps(path: Path, fps: float) -> Iterator[np.ndarray]:
    """RGB frames resampled to `fps`: at each tick k / fps, the source frame on screen at that time."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        origin = None
        previous = None
        tick = 0
        time = 0.0
        for index, frame in enumerate(container.decode(stream)):
            time = frame.time if frame.time is not None else index / fps
            origin = time if origin is None else origin
            time -= origin
            # Emit the previous frame for every tick before this frame appears.
            while previous is not None and tick / fps < time - 1e-6:
                yield previous
                tick += 1
            previous = frame.to_ndarray(format="rgb24")
        if previous is None:
            return
        # The last source frame stays on screen for one source frame duration.
        rate = float(stream.average_rate or stream.guessed_rate or fps)
        end = time + 1.0 / rate
        while tick / fps < end - 1e-6:
            yield previous
            tick += 1


def probe(path: Path) -> dict:
    """Basic facts of a video, or the reason it cannot be used (key "reason")."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return {"reason": "no video stream"}
            stream = container.streams.video[0]
            facts = {
                "source_fps": float(stream.average_rate or stream.guessed_rate or 0.0),
                "source_size": [stream.codec_context.width, stream.codec_context.height],
                "has_audio": bool(container.streams.audio),
            }
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
        return {"reason": f"unreadable video: {str(err).splitlines()[0] if str(err) else type(err).__name__}"}
    if not facts["has_audio"]:
        facts["reason"] = "no audio stream"
    return facts


def detection_copy(frame: np.ndarray, max_side: int) -> np.ndarray:
    """The frame downscaled (area-averaged) to at most `max_side` pixels on its longer side, for the landmarker
    (its landmarks are image-normalised, so they hold for the full-size frame too)."""
    shrink = min(1.0, max_side / max(frame.shape[:2]))
    return frame if shrink == 1.0 else cv2.resize(frame, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)


def face_box(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Landmark bounding box (x0, y0, x1, y1) in source pixels."""
    xy = points[:, :2] * (width, height)
    return np.concatenate([xy.min(axis=0), xy.max(axis=0)])


def _fill_missing(values: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Linear interpolation over frames without a face (nearest value at the ends)."""
    if found.all() or not found.any():
        return values
    frames = np.arange(len(values))
    flat = values.reshape(len(values), -1)
    filled = np.stack([np.interp(frames, frames[found], column[found]) for column in flat.T], axis=1)
    return filled.reshape(values.shape).astype(values.dtype)


def plan_clips(found: np.ndarray, boxes: np.ndarray, base_id: str, settings: PreprocessSettings) -> list[ClipPlan]:
    """Split a video's frames into clips and judge each: `found` (T,) bool, `boxes` (T, 4) face boxes."""
    total = len(found)
    sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    # Shot changes: the face jumps between two consecutive frames where it is found.
    cuts = [0]
    for t in range(1, total):
        if found[t] and found[t - 1]:
            jump = np.linalg.norm(centres[t] - centres[t - 1])
            if jump > settings.cut_jump * max(sizes[t], sizes[t - 1]):
                cuts.append(t)
    cuts.append(total)
    clip_frames = max(1, round(settings.clip_seconds * settings.fps))
    plans = []
    for seg_start, seg_stop in zip(cuts[:-1], cuts[1:], strict=True):
        pieces = math.ceil((seg_stop - seg_start) / clip_frames)
        edges = np.linspace(seg_start, seg_stop, pieces + 1).round().astype(int)
        for start, stop in zip(edges[:-1], edges[1:], strict=True):
            plans.append(ClipPlan(f"{base_id}_{len(plans):03d}", int(start), int(stop)))
    for plan in plans:
        _judge_and_box(plan, found, boxes, sizes, settings)
    return plans


def _judge_and_box(plan: ClipPlan, found, boxes, sizes, settings: PreprocessSettings) -> None:
    """Quality checks of one clip; for a kept clip, its smoothed crop boxes."""
    frames = slice(plan.start, plan.stop)
    length = plan.stop - plan.start
    seen = found[frames]
    plan.detection_rate = float(seen.mean()) if length else 0.0
    plan.face_size = float(np.median(sizes[frames][seen])) if seen.any() else 0.0
    if length < settings.min_clip_seconds * settings.fps:
        plan.reason = f"too short: {length / settings.fps:.2f} s (min {settings.min_clip_seconds} s)"
    elif plan.detection_rate < settings.min_detection_rate:
        plan.reason = (
            f"face missing in {100 * (1 - plan.detection_rate):.0f}% of frames "
            f"(at most {100 * (1 - settings.min_detection_rate):.0f}% allowed)"
        )
    elif plan.face_size < settings.min_face_size:
        plan.reason = f"face too small: {plan.face_size:.0f} px (min {settings.min_face_size:.0f} px)"
    if plan.reason is not None:
        return
    plan.boxes = crop_boxes(_fill_missing(boxes[frames], seen), settings)


def crop_boxes(face_boxes: np.ndarray, settings: PreprocessSettings) -> np.ndarray:
    """Face boxes (T, 4) of consecutive frames -> square crop boxes (T, 3) x0, y0, side, smoothed over time
    (a single frame, e.g. a portrait, is left as is)."""
    side = np.maximum(face_boxes[:, 2] - face_boxes[:, 0], face_boxes[:, 3] - face_boxes[:, 1])
    height = face_boxes[:, 3] - face_boxes[:, 1]
    centre_x = (face_boxes[:, 0] + face_boxes[:, 2]) / 2
    centre_y = (face_boxes[:, 1] + face_boxes[:, 3]) / 2 - settings.crop_shift * height
    sigma = settings.smooth_seconds * settings.fps
    if sigma > 0:
        # A steady camera on a moving head: follow the face smoothly, zoom even more smoothly.
        centre_x = gaussian_filter1d(centre_x, sigma, mode="nearest")
        centre_y = gaussian_filter1d(centre_y, sigma, mode="nearest")
        side = gaussian_filter1d(side, 3 * sigma, mode="nearest")
    crop_side = side * settings.crop_scale
    return np.stack([centre_x - crop_side / 2, centre_y - crop_side / 2, crop_side], axis=1)


def crop_frame(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The square `box` (x0, y0, side; may leave the frame, padded black) resized to size x size."""
    x0, y0, side = (float(v) for v in box)
    scale = size / side
    if scale < 0.5:
        # Area-average big shrinks first: a bilinear warp alone would alias.
        factor = int(1 / scale) // 1
        frame = cv2.resize(frame, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
        x0, y0, side, scale = x0 / factor, y0 / factor, side / factor, scale * factor
    # Pixel centres: source pixel u maps to (u + 0.5 - x0) * scale - 0.5.
    affine = np.array([[scale, 0, (0.5 - x0) * scale - 0.5], [0, scale, (0.5 - y0) * scale - 0.5]])
    return cv2.warpAffine(frame, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def landmarks_to_crop(points: np.ndarray, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Source-normalised landmarks (..., 478, 3) -> normalised to the crop boxes (..., 3) (x, y, z alike)."""
    x0, y0, side = (np.asarray(boxes, dtype=np.float64)[..., i, None] for i in range(3))
    crop = np.stack(
        [
            (points[..., 0] * width - x0) / side,
            (points[..., 1] * height - y0) / side,
            points[..., 2] * width / side,  # z is in image widths, like x
        ],
        axis=-1,
    )
    return crop.astype(np.float32)


def write_video(path: Path, frames: Iterator[np.ndarray], fps: int, size: int, crf: int) -> int:
    """Encode RGB frames as H.264 (yuv420p) mp4; returns the number of frames written."""
    count = 0
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            count += 1
        for packet in stream.encode(None):
            container.mux(packet)
    return count


class Preprocessor:
    """Turns the videos under `input_root` into clip folders under `output_root` (see module docstring)."""

    def __init__(self, input_root: str | os.PathLike, output_root: str | os.PathLike, settings=None):
        self.input_root = Path(input_root).expanduser()
        self.output_root = Path(output_root).expanduser()
        self.settings = settings or PreprocessSettings()
        if self.settings.size < 16 or self.settings.fps <= 0 or self.settings.clip_seconds <= 0:
            raise InputError("size must be >= 16, fps and clip_seconds > 0")
        if not Path(self.settings.model_path).is_file():
            raise InputError(f"face landmarker model not found: {self.settings.model_path}")

    def run(self, progress: bool = True) -> dict:
        videos = find_videos(self.input_root)
        self.output_root.mkdir(parents=True, exist_ok=True)
        (self.output_root / DONE_DIR).mkdir(exist_ok=True)
        reports = []
        bar = tqdm(videos, desc="preprocess", unit="video", disable=not progress)
        for video in bar:
            bar.set_postfix_str(video.name)
            reports.append(self.process_video(video, progress))
            self._write_report(reports, len(videos))
        return self._write_report(reports, len(videos))

    def process_video(self, video: Path, progress: bool = False) -> VideoReport:
        base_id = video_id(video, self.input_root)
        source = str(video.relative_to(self.input_root))
        marker = self.output_root / DONE_DIR / f"{base_id}.json"
        if marker.is_file():
            report = VideoReport(**json.loads(marker.read_text()))
            report.skipped = True
            return report
        report = VideoReport(source)
        facts = probe(video)
        if "reason" in facts:
            report.rejected.append({"video": source, "reason": facts["reason"]})
        else:
            try:
                self._process(video, base_id, source, facts, report, progress)
            except (av.FFmpegError, InputError) as err:  # e.g. a file truncated half-way
                report.kept.clear()
                report.rejected = [{"video": source, "reason": f"decoding failed: {str(err).splitlines()[0]}"}]
        _atomic_write_text(marker, json.dumps(asdict(report), indent=1))
        return report

    def _process(self, video: Path, base_id: str, source: str, facts: dict, report, progress: bool) -> None:
        s = self.settings
        found, boxes, points, size = self._track(video, progress)
        if len(found) == 0:
            report.rejected.append({"video": source, "reason": "no frames decoded"})
            return
        width, height = size
        plans = plan_clips(found, boxes, base_id, s)
        audio = None
        if any(plan.reason is None for plan in plans):
            audio = load_audio(video, s.sample_rate)
            samples_per_frame = s.sample_rate / s.fps
            for plan in plans:
                start, stop = round(plan.start * samples_per_frame), round(plan.stop * samples_per_frame)
                if plan.reason is None and rms_dbfs(audio[start:stop]) < SILENCE_DBFS:
                    plan.reason = f"silent audio (below {SILENCE_DBFS:.0f} dBFS)"
        for plan in plans:
            if plan.reason is not None:
                report.rejected.append({"clip": plan.clip_id, "reason": plan.reason})
        kept = [plan for plan in plans if plan.reason is None]
        if not kept:
            return
        frames = iter_frames_at_fps(video, s.fps)
        position = 0
        for plan in kept:
            target = self.output_root / plan.clip_id
            if (target / "meta.json").is_file():  # written by an interrupted earlier run
                report.kept.append(plan.clip_id)
                continue
            for _ in range(plan.start - position):  # decode past frames of rejected or done clips
                next(frames)
            position = plan.stop
            clip_frames = (crop_frame(next(frames), plan.boxes[t], s.size) for t in range(plan.stop - plan.start))
            self._write_clip(plan, clip_frames, audio, points, found, facts, source, (width, height), target)
            report.kept.append(plan.clip_id)

    def _track(self, video: Path, progress: bool):
        """Pass 1: landmarks (source-normalised) and face boxes of every frame at the output fps."""
        s = self.settings
        found, boxes, points = [], [], []
        size = (0, 0)
        empty = np.zeros((478, 3), np.float32)
        with FaceLandmarker(s.model_path, mode="video") as landmarker:
            frames = iter_frames_at_fps(video, s.fps)
            for index, frame in enumerate(tqdm(frames, desc="track", unit="frame", leave=False, disable=not progress)):
                height, width = frame.shape[:2]
                size = (width, height)
                small = detection_copy(frame, s.detect_max_side)
                face = landmarker.detect_video_frame(small, timestamp_ms=round(index * 1000 / s.fps))
                found.append(face is not None)
                points.append(face.points if face is not None else empty)
                boxes.append(face_box(face.points, width, height) if face is not None else np.zeros(4))
        if not found:
            return np.zeros(0, bool), np.zeros((0, 4)), np.zeros((0, 478, 3), np.float32), size
        return np.array(found), np.array(boxes), np.array(points, dtype=np.float32), size

    def _write_clip(self, plan, frames, audio, points, found, facts, source, source_size, target: Path) -> None:
        s = self.settings
        width, height = source_size
        partial = self.output_root / f".partial_{plan.clip_id}"
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir()
        num_frames = plan.stop - plan.start
        written = write_video(partial / "frames.mp4", frames, s.fps, s.size, s.crf)
        assert written == num_frames, (written, num_frames)
        samples_per_frame = s.sample_rate / s.fps
        start = round(plan.start * samples_per_frame)
        clip_audio = audio[start : start + round(num_frames * samples_per_frame)]
        # The soundtrack may end a little before the picture: pad with silence to the exact length.
        clip_audio = np.pad(clip_audio, (0, round(num_frames * samples_per_frame) - len(clip_audio)))
        soundfile.write(partial / "audio.wav", clip_audio, s.sample_rate, subtype="PCM_16")
        seen = found[plan.start : plan.stop]
        source_points = _fill_missing(points[plan.start : plan.stop], seen)
        landmarks = landmarks_to_crop(source_points, plan.boxes, width, height)
        np.save(partial / "landmarks.npy", landmarks)
        np.save(partial / "poses.npy", np.stack([estimate_pose(p, s.size) for p in landmarks]))
        meta = {
            "clip_id": plan.clip_id,
            "source": source,
            "source_fps": facts.get("source_fps"),
            "source_size": [width, height],
            "start_frame": plan.start,
            "start_seconds": plan.start / s.fps,
            "num_frames": num_frames,
            "fps": s.fps,
            "size": [s.size, s.size],
            "sample_rate": s.sample_rate,
            "frames": "frames.mp4",
            "detection_rate": plan.detection_rate,
            "missing_frames": np.flatnonzero(~seen).tolist(),  # landmarks there are interpolated
            "face_size": plan.face_size,
            "crop_boxes": np.round(plan.boxes, 2).tolist(),  # per frame: x0, y0, side in source pixels
            "settings": asdict(s),
        }
        (partial / "meta.json").write_text(json.dumps(meta, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(partial, target)

    def _write_report(self, reports: list[VideoReport], total_videos: int) -> dict:
        kept = [clip for r in reports for clip in r.kept]
        rejected = [{"source": r.source, **entry} for r in reports for entry in r.rejected]
        reasons: dict[str, int] = {}
        for entry in rejected:
            key = entry["reason"].split(":")[0].split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
        summary = {
            "videos": total_videos,
            "videos_done": len(reports),
            "videos_skipped": sum(r.skipped for r in reports),
            "clips_kept": len(kept),
            "clips_rejected": len(rejected),
            "rejected_by_reason": reasons,
            "kept": kept,
            "rejected": rejected,
        }
        _atomic_write_text(self.output_root / REPORT_NAME, json.dumps(summary, indent=1))
        return summary


def _atomic_write_text(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)
