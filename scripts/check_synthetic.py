"""Check the synthetic set: mouth opening vs speech loudness (Pearson r), and the real Face Landmarker's
detection rate and landmark error on generated faces; optionally draw the README pictures.

    python scripts/check_synthetic.py previews=docs/images
"""

import json
import tempfile
from pathlib import Path

import cv2
import hydra
import numpy as np
from omegaconf import DictConfig
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from faceedittalker import CONFIGS_DIR
from faceedittalker.data.audio import load_audio
from faceedittalker.data.clips import list_clips, read_frames
from faceedittalker.errors import exit_on_input_error
from faceedittalker.landmarks.detector import FaceLandmarker
from faceedittalker.landmarks.render import render_landmarks
from faceedittalker.synthetic import sets as syn

SHORT_NAMES = {"Eyeglasses": "glasses", "Smiling": "smiling", "Mouth_Slightly_Open": "mouth open",
               "Black_Hair": "black hair", "Blond_Hair": "blond", "Brown_Hair": "brown hair",
               "Gray_Hair": "gray hair", "Bald": "bald", "Bangs": "bangs", "Mustache": "mustache",
               "Goatee": "goatee", "Pale_Skin": "pale", "Heavy_Makeup": "makeup", "Wearing_Lipstick": "lipstick",
               "Male": "male", "Young": "young", "Rosy_Cheeks": "rosy", "Big_Lips": "big lips",
               "Big_Nose": "big nose", "Narrow_Eyes": "narrow eyes", "Bushy_Eyebrows": "bushy brows",
               "5_o_Clock_Shadow": "stubble", "Wearing_Earrings": "earrings"}  # fmt: skip


def landmark_errors(landmarker: FaceLandmarker, image: np.ndarray, truth: np.ndarray) -> tuple[bool, float, float]:
    """(detected, mean error in pixels, mean error / inter-ocular distance) over the 478 points' x, y."""
    face = landmarker.detect(image)
    if face is None:
        return False, np.nan, np.nan
    size = image.shape[0]
    error = np.linalg.norm((face.points[:, :2] - truth[:, :2]) * size, axis=1).mean()
    interocular = np.linalg.norm((truth[33, :2] - truth[263, :2]) * size)
    return True, float(error), float(error / interocular)


def contact_sheet(path: Path, count: int = 16, size: int = 128, seed: int = 0) -> None:
    """Faces with their rendered attribute labels, 8 per row."""
    font = ImageFont.load_default()
    tiles = []
    for index in range(count):
        image, _, identity = syn._still_sample(seed, "attributes", index, size)
        tile = Image.new("RGB", (size, size + 46), "white")
        tile.paste(Image.fromarray(image), (0, 0))
        names = [SHORT_NAMES[n] for n in syn.RENDERED_ATTRIBUTES if identity.attributes[n] and n != "No_Beard"]
        lines, line = [], ""
        for name in names:
            if len(line) + len(name) + 2 > 24:
                lines.append(line)
                line = ""
            line = f"{line}, {name}" if line else name
        ImageDraw.Draw(tile).multiline_text((3, size + 2), "\n".join([*lines, line][:4]), fill="black",
                                            font=font, spacing=0)  # fmt: skip
        tiles.append(np.asarray(tile))
    rows = [np.concatenate(tiles[r : r + 8], axis=1) for r in range(0, count, 8)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path, optimize=True)


def clip_strip(path: Path, clip: Path, frames: np.ndarray, count: int = 10, size: int = 128) -> None:
    """Frames of one clip over their ground-truth landmark images and the mouth vs loudness curves."""
    landmarks = np.load(clip / "landmarks.npy")
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    top = [cv2.resize(frames[t], (size, size), interpolation=cv2.INTER_AREA) for t in picks]
    middle = [render_landmarks(landmarks[t], size, thickness=1) for t in picks]
    width, height = size * count, 70
    plot = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(plot)
    loudness = syn.speech_envelope(load_audio(clip / "audio.wav"))[0]
    opening = syn.mouth_opening(landmarks)
    for curve, colour in ((loudness, (120, 120, 120)), (opening, (200, 30, 30))):
        ys = height - 6 - (height - 12) * curve / curve.max()
        xs = np.linspace(0, width - 1, len(curve))
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=colour, width=2)
    for t in picks:
        x = t / (len(frames) - 1) * (width - 1)
        draw.line([(x, 0), (x, height)], fill=(180, 200, 255))
    draw.text((4, 2), "grey: speech loudness, red: ground-truth mouth opening", fill="black")
    strip = np.concatenate([np.concatenate(top, 1), np.concatenate(middle, 1), np.asarray(plot)], 0)
    Image.fromarray(strip).save(path, optimize=True)


@hydra.main(config_path=str(CONFIGS_DIR), config_name="check_synthetic", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    report: dict = {"resolution": cfg.resolution}
    with tempfile.TemporaryDirectory() as tmp:
        clips_dir = syn.ensure_synthetic_set(tmp, "clips", cfg.clips, cfg.resolution, cfg.seed, cfg.workers)
        stills_dir = syn.ensure_synthetic_set(tmp, "images", cfg.stills, cfg.resolution, cfg.seed, cfg.workers)
        clips = list_clips(clips_dir)
        openings, loudnesses, per_clip_r = [], [], []
        video_results, still_results = [], []
        with FaceLandmarker(mode="image") as landmarker:
            for clip in tqdm(clips, desc="clips", leave=False):
                landmarks = np.load(clip / "landmarks.npy")
                loudness = syn.speech_envelope(load_audio(clip / "audio.wav"))[0]
                opening = syn.mouth_opening(landmarks)
                per_clip_r.append(float(np.corrcoef(opening, loudness)[0, 1]))
                openings.append(opening)
                loudnesses.append(loudness)
                frames = read_frames(clip)
                for t in range(0, len(frames), cfg.every):
                    video_results.append(landmark_errors(landmarker, frames[t], landmarks[t]))
            truth = np.load(stills_dir / "landmarks.npy")
            for index in tqdm(range(cfg.stills), desc="stills", leave=False):
                image = np.asarray(Image.open(stills_dir / f"{index:06d}.png").convert("RGB"))
                still_results.append(landmark_errors(landmarker, image, truth[index]))
        report["pearson_r_mouth_vs_loudness"] = {
            "pooled": float(np.corrcoef(np.concatenate(openings), np.concatenate(loudnesses))[0, 1]),
            "per_clip_min": min(per_clip_r), "per_clip_mean": float(np.mean(per_clip_r)),
        }  # fmt: skip
        for name, results in (("clip_frames", video_results), ("stills", still_results)):
            found = np.array([r[0] for r in results])
            report[name] = {
                "frames": len(results), "detection_rate": float(found.mean()),
                "mean_error_px": float(np.nanmean([r[1] for r in results])),
                "mean_error_over_interocular": float(np.nanmean([r[2] for r in results])),
            }  # fmt: skip
        if cfg.previews:
            out = Path(cfg.previews)
            out.mkdir(parents=True, exist_ok=True)
            contact_sheet(out / "synthetic_faces.png")
            clip_strip(out / "synthetic_clip.png", clips[0], read_frames(clips[0]))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
