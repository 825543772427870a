"""The synthetic talking-face set: attributes are drawn where they belong, mouths follow speech, sets are
deterministic and laid out as docs/design.md, "Data on disk", says."""

import json

import av
import cv2
import numpy as np
import pytest
import soundfile
from PIL import Image

from faceedittalker.data.attributes import ATTRIBUTE_FILE_NAME, CELEBA_ATTRIBUTES, read_attribute_file
from faceedittalker.synthetic import sets as syn
from faceedittalker.synthetic.face import (
    CHIN,
    FACE_OVAL,
    FOREHEAD_TOP,
    HAIR_COLOURS,
    LEFT_BROW_UPPER,
    LEFT_EYE,
    LEFT_FACE_SIDE,
    LIPS_OUTER_LOWER,
    LIPS_OUTER_UPPER,
    NOSE_TIP,
    RIGHT_BROW_UPPER,
    RIGHT_EYE,
    RIGHT_FACE_SIDE,
)
from faceedittalker.utils.files import TMP_PREFIX

SIZE = 128


def _box(shape, x0, x1, y0, y1):
    mask = np.zeros(shape, bool)
    mask[max(0, int(y0)) : max(0, int(np.ceil(y1))), max(0, int(x0)) : max(0, int(np.ceil(x1)))] = True
    return mask


def _region(name: str, px: np.ndarray) -> np.ndarray:
    """Where an attribute should show, from the ground-truth landmarks (pixels) of the 'off' image."""
    shape = (SIZE, SIZE)
    fh = px[CHIN, 1] - px[FOREHEAD_TOP, 1]  # face height in pixels
    left, right = px[RIGHT_FACE_SIDE, 0], px[LEFT_FACE_SIDE, 0]
    eyes = px[RIGHT_EYE + LEFT_EYE]
    brows_top = px[RIGHT_BROW_UPPER + LEFT_BROW_UPPER, 1].min()
    lips = px[LIPS_OUTER_UPPER + LIPS_OUTER_LOWER]
    face = np.zeros(shape, np.uint8)
    cv2.fillPoly(face, [np.round(px[FACE_OVAL]).astype(np.int32)], 1)
    face = face.astype(bool)
    eye_band = _box(shape, left - 0.1 * fh, right + 0.1 * fh, brows_top - 0.05 * fh,
                    eyes[:, 1].max() + 0.1 * fh)  # fmt: skip
    mouth = _box(shape, lips[:, 0].min() - 0.08 * fh, lips[:, 0].max() + 0.08 * fh,
                 lips[:, 1].min() - 0.06 * fh, lips[:, 1].max() + 0.1 * fh)  # fmt: skip
    lower_face = _box(shape, left - 0.05 * fh, right + 0.05 * fh, px[NOSE_TIP, 1], px[CHIN, 1] + 0.1 * fh)
    head = _box(shape, left - 0.35 * fh, right + 0.35 * fh, 0, px[CHIN, 1] + 0.45 * fh)
    regions = {
        "Eyeglasses": eye_band,
        "Heavy_Makeup": eye_band,
        "Narrow_Eyes": eye_band,
        "Bushy_Eyebrows": _box(shape, left, right, brows_top - 0.1 * fh, eyes[:, 1].min()),
        "Smiling": lower_face,
        "Mouth_Slightly_Open": lower_face,
        "Big_Lips": mouth,
        "Wearing_Lipstick": mouth,
        "Mustache": _box(
            shape, lips[:, 0].min() - 0.1 * fh, lips[:, 0].max() + 0.1 * fh, px[NOSE_TIP, 1], lips[:, 1].mean()
        ),  # fmt: skip
        "Goatee": _box(shape, lips[:, 0].min(), lips[:, 0].max(), lips[:, 1].mean(), px[CHIN, 1] + 0.06 * fh),
        "No_Beard": lower_face,
        "5_o_Clock_Shadow": lower_face,
        "Big_Nose": _box(
            shape, px[NOSE_TIP, 0] - 0.26 * fh, px[NOSE_TIP, 0] + 0.26 * fh, eyes[:, 1].mean(), lips[:, 1].mean()
        ),  # fmt: skip
        "Rosy_Cheeks": _box(shape, left, right, eyes[:, 1].max(), lips[:, 1].max()) & face,
        "Wearing_Earrings": _box(shape, left - 0.12 * fh, left + 0.05 * fh, eyes[:, 1].mean(), px[CHIN, 1])
        | _box(shape, right - 0.05 * fh, right + 0.12 * fh, eyes[:, 1].mean(), px[CHIN, 1]),
        "Bangs": _box(shape, left, right, px[FOREHEAD_TOP, 1] - 0.1 * fh, eyes[:, 1].min()),
        "Bald": _box(shape, left - 0.2 * fh, right + 0.2 * fh, 0, eyes[:, 1].mean() + 0.15 * fh) & ~face,
        "Pale_Skin": head,
        "Young": head,
        "Male": head & ~_box(shape, left, right, brows_top, px[NOSE_TIP, 1]),
    }
    hair = head & ~(face & (np.arange(SIZE)[:, None] > brows_top))  # around the face, and the brows
    for colour in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"):
        regions[colour] = hair
    return regions[name]


def _off_and_on(name: str):
    base_overrides = {name: False}
    if name in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Bangs", "Male"):
        base_overrides["Bald"] = False
    if name == "Bald":
        base_overrides["Male"] = True  # short hair: going bald changes the top of the head
    if name == "No_Beard":
        base_overrides = {"No_Beard": True, "Male": True}
    identity = syn.sample_identity(np.random.default_rng(7), **base_overrides)
    if name in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"):
        identity = syn.with_attributes(identity, **{colour: False for colour in HAIR_COLOURS
                                                    if colour != "auburn"})  # fmt: skip
    off = identity
    on = syn.with_attributes(identity, **{name: name != "No_Beard"})
    if name == "No_Beard":
        off, on = on, off  # "on" = clean-shaven; the beard is what changes
    return off, on


@pytest.mark.parametrize("name", syn.RENDERED_ATTRIBUTES)
def test_attribute_changes_its_region_and_little_else(name):
    off, on = _off_and_on(name)
    column = CELEBA_ATTRIBUTES.index(name)
    assert off.labels()[column] == -1 and on.labels()[column] == 1
    image_off, landmarks = syn.render_face(off, syn.rest_expression(off), syn.Pose(), SIZE)
    image_on, _ = syn.render_face(on, syn.rest_expression(on), syn.Pose(), SIZE)
    changed = np.abs(image_on.astype(int) - image_off.astype(int)).sum(-1) > 24
    region = _region(name, landmarks[:, :2] * SIZE)
    inside, total = int((changed & region).sum()), int(changed.sum())
    # Visible: at least 0.4 % of the image (65 pixels at 128 px) changes; placed: >= 85 % of it inside.
    assert inside >= 65, f"{name}: only {inside} pixels changed in its region"
    assert inside / total >= 0.85, f"{name}: {inside}/{total} changed pixels inside its region"


def test_non_rendered_attributes_are_absent():
    rendered = [CELEBA_ATTRIBUTES.index(n) for n in syn.RENDERED_ATTRIBUTES]
    for seed in range(20):
        labels = syn.sample_identity(np.random.default_rng(seed)).labels()
        assert np.all(np.delete(labels, rendered) == -1)


def test_mouth_opening_follows_speech_loudness():
    rng = np.random.default_rng(3)
    identity = syn.sample_identity(rng, Smiling=False)
    waveform, _ = syn.cut_speech(rng, 2.0)
    frames, landmarks, truth = syn.render_clip(identity, waveform, rng, size=64)
    loudness, _ = syn.speech_envelope(waveform)
    assert len(frames) == len(landmarks) == len(loudness) == 50
    r = np.corrcoef(syn.mouth_opening(landmarks), loudness)[0, 1]
    assert r >= 0.8, r
    assert truth["blink"].max() == 1.0  # at least one full blink in two seconds


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return {
        kind: syn.ensure_synthetic_set(root, kind, count=3, resolution=32, seed=1, clip_seconds=(0.6, 1.0))
        for kind in syn.SET_KINDS
    }


def test_image_sets_layout(sets):
    for kind in ("images", "attributes"):
        folder = sets[kind]
        pngs = sorted(p.name for p in folder.glob("*.png"))
        assert pngs == ["000000.png", "000001.png", "000002.png"]
        assert np.asarray(Image.open(folder / pngs[0])).shape == (32, 32, 3)
        landmarks = np.load(folder / "landmarks.npy")
        assert landmarks.shape == (3, 478, 3) and landmarks.dtype == np.float32
        assert 0 < landmarks[..., :2].min() and landmarks[..., :2].max() < 1
        assert json.loads((folder / ".complete").read_text())["kind"] == kind
    names, rows = read_attribute_file(sets["attributes"] / ATTRIBUTE_FILE_NAME)
    assert names == list(CELEBA_ATTRIBUTES) and sorted(rows) == pngs
    assert not (sets["images"] / ATTRIBUTE_FILE_NAME).exists()


def test_clip_layout(sets):
    clips = sorted(p for p in sets["clips"].iterdir() if p.is_dir())
    assert [c.name for c in clips] == ["synthetic_000000", "synthetic_000001", "synthetic_000002"]
    for clip in clips:
        landmarks = np.load(clip / "landmarks.npy")
        meta = json.loads((clip / "meta.json").read_text())
        waveform, rate = soundfile.read(clip / "audio.wav")
        with av.open(str(clip / "frames.mp4")) as video:
            frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
        assert rate == 16000 and waveform.ndim == 1
        assert landmarks.shape == (len(frames), 478, 3) and frames[0].shape == (32, 32, 3)
        assert len(frames) == int(np.ceil(len(waveform) / 640)) == meta["num_frames"]
        assert meta["fps"] == 25 and meta["size"] == [32, 32] and meta["source"] == "synthetic"
        assert set(meta["attributes"]) == set(CELEBA_ATTRIBUTES)


def test_same_seed_same_set_and_ensure_is_idempotent(sets, tmp_path):
    again = syn.write_synthetic_set(tmp_path / "again", "attributes", count=3, resolution=32, seed=1)
    for name in ("000000.png", "000002.png", ATTRIBUTE_FILE_NAME, "landmarks.npy"):
        assert (again / name).read_bytes() == (sets["attributes"] / name).read_bytes()
    other = syn.write_synthetic_set(tmp_path / "other", "attributes", count=1, resolution=32, seed=2)
    assert (other / "000000.png").read_bytes() != (again / "000000.png").read_bytes()
    stamp = (sets["images"] / "000000.png").stat().st_mtime_ns
    assert syn.ensure_synthetic_set(sets["images"].parent, "images", 3, 32, 1) == sets["images"]
    assert (sets["images"] / "000000.png").stat().st_mtime_ns == stamp
    assert not [p for p in sets["images"].parent.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_parallel_workers_give_the_same_set(tmp_path):
    one = syn.write_synthetic_set(tmp_path / "one", "images", count=8, resolution=32, seed=4, workers=1)
    two = syn.write_synthetic_set(tmp_path / "two", "images", count=8, resolution=32, seed=4, workers=2)
    for index in (0, 7):
        assert (one / f"{index:06d}.png").read_bytes() == (two / f"{index:06d}.png").read_bytes()


def test_unfinished_set_is_regenerated(tmp_path):
    folder = tmp_path / "images-32px-n2-seed0"
    folder.mkdir()
    (folder / "junk.png").write_bytes(b"half-written")
    assert syn.ensure_synthetic_set(tmp_path, "images", 2, 32, 0) == folder
    assert sorted(p.name for p in folder.glob("*.png")) == ["000000.png", "000001.png"]


@pytest.mark.slow
def test_real_face_landmarker_finds_synthetic_faces():
    from faceedittalker.landmarks.detector import FaceLandmarker

    errors = []
    with FaceLandmarker(mode="image") as landmarker:
        for seed in range(4):
            rng = np.random.default_rng(seed)
            identity = syn.sample_identity(rng)
            image, truth = syn.render_face(identity, syn.rest_expression(identity), syn._still_pose(rng), 256)
            face = landmarker.detect(image)
            assert face is not None, f"no face found in synthetic face {seed}"
            errors.append(np.linalg.norm((face.points[:, :2] - truth[:, :2]) * 256, axis=1).mean())
    assert np.mean(errors) < 4.0, errors  # pixels at 256 px; measured about 1.7
