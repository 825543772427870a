"""The reference portrait of Alg. 4: reading any image, finding the one face, the preprocessing crop, paste-back."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import soundfile
from media_fixtures import ASTRONAUT_PATH, astronaut, speech_path, write_video
from PIL import Image

from faceedittalker.data.clips import read_frames
from faceedittalker.data.portrait import PasteBack, crop_face, find_face, load_portrait, paste_back
from faceedittalker.data.preprocess import Preprocessor, PreprocessSettings
from faceedittalker.errors import InputError
from faceedittalker.landmarks.detector import FaceLandmarker

CANVAS_OFFSET = (2200, 1300)  # where the astronaut sits in the large, off-centre portrait (x, y)


@pytest.fixture(scope="module")
def landmarker():
    with FaceLandmarker(mode="image", num_faces=8) as detector:
        yield detector


@pytest.fixture(scope="module")
def reference_crop(landmarker):
    return find_face(astronaut(), landmarker=landmarker)


@pytest.fixture(scope="module")
def large_crop(landmarker):
    return find_face(large_portrait(), landmarker=landmarker)


def large_portrait() -> np.ndarray:
    """The astronaut low and to the right in a 3000 x 2000 grey-blue canvas (its face fills 3.5% of the width)."""
    canvas = np.empty((2000, 3000, 3), np.uint8)
    canvas[:] = (150, 160, 175)
    x, y = CANVAS_OFFSET
    canvas[y : y + 512, x : x + 512] = astronaut()
    return canvas


def save(image: np.ndarray | Image.Image, path, **kwargs):
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(path, **kwargs)
    return path


def assert_same_face(crop, reference, offset=(0, 0), tolerance=4.0):
    """`crop` found the astronaut's face where `reference` did, moved by `offset` (x, y) portrait pixels."""
    expected = reference.face_box + np.array([*offset, *offset])
    assert np.abs(crop.face_box - expected).max() < tolerance, (crop.face_box, expected)


# --- reading ---------------------------------------------------------------------------------------------------


def test_colour_jpeg_loads_as_rgb_uint8():
    image = load_portrait(ASTRONAUT_PATH)
    assert image.dtype == np.uint8 and image.shape == (512, 512, 3)
    np.testing.assert_array_equal(image, astronaut())


def test_grey_palette_and_16bit_portraits_load_and_find_the_face(tmp_path, landmarker, reference_crop):
    grey = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2GRAY)
    paths = {
        "grey": save(grey, tmp_path / "grey.png"),
        "palette": save(Image.fromarray(astronaut()).quantize(64), tmp_path / "palette.png"),
        "16bit": save(Image.fromarray(grey.astype(np.uint16) * 257), tmp_path / "grey16.png"),
    }
    assert Image.open(paths["16bit"]).mode.startswith("I")  # really 16 bits per pixel on disk
    for name, path in paths.items():
        image = load_portrait(path)
        assert image.dtype == np.uint8 and image.shape == (512, 512, 3), name
        if name != "palette":
            # Grey stays grey (all channels equal); 16-bit is rescaled (65535 -> 255), not clipped to white.
            np.testing.assert_array_equal(image[..., 0], image[..., 2])
            assert np.abs(image[..., 0].astype(int) - grey).max() <= 1, name
        assert_same_face(find_face(image, landmarker=landmarker), reference_crop, tolerance=6.0)


def test_rgba_is_composited_on_white(tmp_path, landmarker, reference_crop):
    rgba = np.dstack([astronaut(), np.full((512, 512), 255, np.uint8)])
    rgba[:, 400:, 3] = 0  # a transparent strip on the right, away from the face
    rgba[:, 400:, :3] = (10, 200, 30)  # hidden colour: must not show through
    image = load_portrait(save(rgba, tmp_path / "cutout.png"))
    assert (image[:, 400:] == 255).all()
    np.testing.assert_array_equal(image[:, :400], astronaut()[:, :400])
    assert_same_face(find_face(image, landmarker=landmarker), reference_crop)


@pytest.mark.parametrize("orientation, rotate", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)])
def test_exif_orientation_is_applied(tmp_path, landmarker, reference_crop, orientation, rotate):
    # A camera stores the sensor's pixels sideways and an Orientation tag saying how to turn them upright.
    sideways = Image.fromarray(astronaut()).transpose(rotate)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(sideways, tmp_path / "phone.jpg", exif=exif, quality=95)
    image = load_portrait(path)
    assert image.shape == (512, 512, 3)
    assert np.abs(image.astype(int) - astronaut()).mean() < 4  # upright again (JPEG noise only)
    assert_same_face(find_face(image, landmarker=landmarker), reference_crop)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.png", "portrait not found"),
        (lambda d: d, "not a file"),
        (lambda d: (d / "notes.png").write_text("this is not a picture\n") and d / "notes.png", "not an image"),
        (lambda d: (d / "speech.jpg").write_bytes(speech_path().read_bytes()) and d / "speech.jpg", "not an image"),
        (lambda d: (d / "half.jpg").write_bytes(ASTRONAUT_PATH.read_bytes()[:20000]) and d / "half.jpg",
         "corrupt or truncated"),
    ],
    ids=["missing", "folder", "text-named-png", "audio-file", "truncated-jpeg"],
)
def test_bad_image_files_are_one_line_input_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError) as err:
        load_portrait(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


# --- finding the face ------------------------------------------------------------------------------------------


def test_crop_matches_what_preprocessing_gives_for_the_same_image(tmp_path, reference_crop):
    # The astronaut as a two-second still video with speech (lossless), through the real preprocessing; its
    # middle frame is what training saw of this picture.
    speech, rate = soundfile.read(speech_path(), dtype="float32")
    raw = tmp_path / "raw"
    raw.mkdir()
    write_video(raw / "still.mp4", np.repeat(astronaut()[None], 50, axis=0), 25, speech[: 2 * rate], rate, crf=0)
    settings = PreprocessSettings(size=256, min_clip_seconds=1.0, crf=0)
    Preprocessor(raw, tmp_path / "clips", settings).run(progress=False)
    clip = tmp_path / "clips" / "still_000"
    meta = json.loads((clip / "meta.json").read_text())
    middle = 25
    np.testing.assert_allclose(reference_crop.crop_box, meta["crop_boxes"][middle], atol=0.5)
    np.testing.assert_allclose(reference_crop.landmarks, np.load(clip / "landmarks.npy")[middle], atol=0.003)
    clip_frame = read_frames(clip, middle, middle + 1)[0].astype(int)
    ours = crop_face(astronaut(), reference_crop, 256).astype(int)
    assert ours.shape == (256, 256, 3)
    assert np.abs(ours - clip_frame).mean() < 3.0  # same square, same resampling (the clip went through H.264)


def test_off_centre_face_in_a_very_large_portrait(large_crop, reference_crop):
    crop = large_crop
    assert crop.portrait_size == (2000, 3000) and crop.num_faces == 1
    assert_same_face(crop, reference_crop, offset=CANVAS_OFFSET, tolerance=8.0)
    x0, y0, x1, y1 = crop.box
    assert x1 - x0 == y1 - y0 and x0 <= crop.crop_box[0] and x1 >= crop.crop_box[0] + crop.crop_box[2]
    # Cropped from the full-resolution portrait: as sharp as the same crop of the 512 px original.
    ours = crop_face(large_portrait(), crop, 256)
    assert cv2.Laplacian(ours, cv2.CV_64F).var() > 0.8 * cv2.Laplacian(
        crop_face(astronaut(), reference_crop, 256), cv2.CV_64F
    ).var()


def test_small_but_usable_portrait(landmarker):
    small = cv2.resize(astronaut(), (330, 330), interpolation=cv2.INTER_AREA)
    crop = find_face(small, landmarker=landmarker)
    assert 64 <= crop.face_size < 80
    assert crop_face(small, crop, 256).shape == (256, 256, 3)


def test_crop_outside_the_image_is_padded_black(landmarker):
    shifted = np.ascontiguousarray(astronaut()[:, 140:])  # the face now near the left edge
    crop = find_face(shifted, landmarker=landmarker)
    assert crop.box[0] < 0
    face = crop_face(shifted, crop, 128)
    outside = int(np.floor(-crop.crop_box[0] / crop.crop_box[2] * 128)) - 1
    assert outside >= 2 and (face[:, :outside] == 0).all() and face[:, outside + 2 :].mean() > 30


@pytest.mark.parametrize("name", ["flat", "coffee"])
def test_no_face_is_an_input_error(landmarker, name):
    from skimage import data

    image = np.full((400, 600, 3), 128, np.uint8) if name == "flat" else data.coffee()
    with pytest.raises(InputError, match="no face found in my.png"):
        find_face(image, landmarker=landmarker, source="my.png")


def test_two_faces_need_face_largest(landmarker, reference_crop):
    # Two people side by side, the right one smaller: both heads whole, 922 x 410 px.
    pair = np.concatenate([astronaut()[:410], cv2.resize(astronaut(), (410, 410), interpolation=cv2.INTER_AREA)], 1)
    with pytest.raises(InputError, match=r"2 faces found in .*face=largest"):
        find_face(pair, landmarker=landmarker)
    crop = find_face(pair, face="largest", landmarker=landmarker)
    assert crop.num_faces == 2
    assert_same_face(crop, reference_crop, tolerance=8.0)  # the left, full-size astronaut


def test_tiny_face_is_an_input_error(landmarker):
    tiny = cv2.resize(astronaut(), (160, 160), interpolation=cv2.INTER_AREA)
    with pytest.raises(InputError, match=r"face too small in .*: 3\d px \(at least 64 px"):
        find_face(tiny, landmarker=landmarker)
    assert find_face(tiny, landmarker=landmarker, min_face_px=24).face_size < 40  # usable if one insists


# --- pasting back ----------------------------------------------------------------------------------------------


TINT = (40, -30, -30)


def muted_portrait() -> np.ndarray:
    """The large portrait softened (so that resampling the crop there and back loses nothing) and with its levels
    in [40, 193] (so that adding TINT never clips): the change a tinted face makes is then the mask times TINT."""
    return (40 + 0.6 * cv2.GaussianBlur(large_portrait(), (0, 0), 2.0)).round().astype(np.uint8)


def tinted(face: np.ndarray) -> np.ndarray:
    return (face.astype(int) + TINT).astype(np.uint8)


def test_paste_back_changes_only_the_face_and_has_no_seam(large_crop):
    portrait = muted_portrait()
    face = tinted(crop_face(portrait, large_crop, 256))
    frame = paste_back(portrait, face, large_crop)
    assert frame.shape == portrait.shape and frame.dtype == np.uint8
    x0, y0, x1, y1 = large_crop.box
    changed_rows, changed_columns = np.nonzero((frame != portrait).any(axis=2))
    assert changed_rows.min() >= y0 and changed_rows.max() < y1
    assert changed_columns.min() >= x0 and changed_columns.max() < x1
    # Everything below is about the square and a margin of 10 px around it (all of the change).
    margin = 10
    frame, portrait = (a[y0 - margin : y1 + margin, x0 - margin : x1 + margin] for a in (frame, portrait))
    x0, y0, x1, y1 = margin, margin, x1 - x0 + margin, y1 - y0 + margin
    change = frame.astype(float) - portrait
    # The face itself (nose tip) is the generated one; the square's rim is untouched.
    nose = (large_crop.landmarks[1, :2] * large_crop.crop_box[2] + large_crop.crop_box[:2]).astype(int)
    nose -= np.array(large_crop.box[:2]) - margin
    np.testing.assert_allclose(change[nose[1], nose[0]], TINT, atol=2)
    assert np.abs(change[y0 : y0 + 3, x0:x1]).max() <= 1 and np.abs(change[y1 - 3 : y1, x0:x1]).max() <= 1
    assert np.abs(change[y0:y1, x0 : x0 + 3]).max() <= 1 and np.abs(change[y0:y1, x1 - 3 : x1]).max() <= 1
    # No seam anywhere: the change of a constant tint varies by at most a few levels between neighbours.
    step = max(np.abs(np.diff(change, axis=0)).max(), np.abs(np.diff(change, axis=1)).max())
    assert step < 6, step


def test_paste_back_of_the_unchanged_crop_gives_the_portrait_back(large_crop):
    portrait = large_portrait()
    paste = PasteBack(portrait, large_crop)
    x0, y0, x1, y1 = large_crop.box
    for region in ("face", "box"):
        frame = PasteBack(portrait, large_crop, region=region)(crop_face(portrait, large_crop, 512))
        error = np.abs(frame[y0:y1, x0:x1].astype(int) - portrait[y0:y1, x0:x1])
        # Only resampling loss (up, then back down): the face is fine, the whole square's sharp flag stripes less so.
        assert error.mean() < (1.0 if region == "face" else 2.5) and np.percentile(error, 99) < 16, region
    # One PasteBack serves many frames and many resolutions; the mask is the same object every time.
    mask = paste.mask
    for resolution in (64, 256):
        assert paste(crop_face(portrait, large_crop, resolution)).shape == portrait.shape
    assert paste.mask is mask and 0.0 <= mask.min() and mask.max() == 1.0


def test_paste_back_box_region_replaces_the_square_but_its_rim(large_crop):
    portrait = muted_portrait()
    face = tinted(crop_face(portrait, large_crop, 256))
    frame = paste_back(portrait, face, large_crop, region="box")
    x0, y0, x1, y1 = large_crop.box
    centre = ((x0 + x1) // 2, (y0 + y1) // 2)
    corner_inside = (x0 + (x1 - x0) // 4, y1 - (y1 - y0) // 4)  # the shoulder: outside the face hull
    for x, y in (centre, corner_inside):
        np.testing.assert_allclose(frame[y, x].astype(int) - portrait[y, x], TINT, atol=3)
    assert np.abs(frame[y0:y1, x0 : x0 + 2].astype(int) - portrait[y0:y1, x0 : x0 + 2]).max() <= 1
    face_only = paste_back(portrait, face, large_crop)
    assert np.abs(face_only[corner_inside[1], corner_inside[0]].astype(int) - portrait[corner_inside[::-1]]).max() <= 1


def test_paste_back_covers_the_landmarks_the_frames_follow(large_crop):
    portrait = muted_portrait()
    side = large_crop.crop_box[2]
    chin = large_crop.landmarks[152, :2] * side + large_crop.crop_box[:2]
    x, y = int(chin[0]), int(chin[1] + 0.07 * side)  # a little below the still chin: where an open jaw reaches
    dropped = large_crop.landmarks.copy()
    dropped[:, 1] += np.where(large_crop.landmarks[:, 1] > large_crop.landmarks[1, 1], 0.09, 0.0)  # jaw down
    still = PasteBack(portrait, large_crop)
    talking = PasteBack(portrait, large_crop, landmarks=np.stack([large_crop.landmarks, dropped]))
    weight = lambda paste: paste.mask[y - paste.top, x - paste.left, 0]
    assert weight(still) < 0.5 and weight(talking) == 1.0
    face = tinted(crop_face(portrait, large_crop, 256))
    np.testing.assert_allclose(talking(face)[y, x].astype(int) - portrait[y, x], TINT, atol=2)


@pytest.mark.parametrize("kind", ["rgb16", "cmyk"])
def test_16bit_colour_and_cmyk_files_load(tmp_path, kind):
    if kind == "rgb16":  # Pillow reads 16-bit RGB PNGs as 8-bit RGB: the top byte
        path = tmp_path / "colour16.png"
        cv2.imwrite(str(path), astronaut()[..., ::-1].astype(np.uint16) * 257)
    else:
        path = save(Image.fromarray(astronaut()).convert("CMYK"), tmp_path / "print.jpg", quality=95)
    image = load_portrait(path)
    assert image.dtype == np.uint8 and image.shape == (512, 512, 3)
    assert np.abs(image.astype(int) - astronaut()).mean() < 3.0
