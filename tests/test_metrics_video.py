"""PSNR, SSIM and landmark distances on a short real video (the astronaut, panned)."""

from __future__ import annotations

import numpy as np
import pytest
from media_fixtures import astronaut
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio

from faceedittalker.landmarks.topology import LIP_POINTS
from faceedittalker.metrics.lmd import detect_video_landmarks, face_lmd, landmark_distance, mouth_lmd
from faceedittalker.metrics.video import frame_psnr, video_psnr, video_ssim


def _pan(count: int = 3, size: int = 256) -> np.ndarray:
    image = astronaut()
    return np.stack([image[20 + 6 * i: 20 + 6 * i + size, 96: 96 + size] for i in range(count)])


def _blur(video: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    return np.stack([gaussian_filter(frame, (sigma, sigma, 0)) for frame in video])


def test_identical_videos_psnr_inf_ssim_one():
    video = _pan()
    assert video_psnr(video, video) == np.inf
    assert video_ssim(video, video) == pytest.approx(1.0)


def test_psnr_matches_skimage_and_blur_lowers_ssim():
    """Gaussian blur sigma 1.5 of the 256 px face crop: PSNR about 26.5 dB, SSIM 1 -> about 0.86 (0.71 at sigma 3)."""
    video = _pan()
    blurred = _blur(video)
    per_frame = frame_psnr(blurred, video)
    for i in range(len(video)):
        assert per_frame[i] == pytest.approx(peak_signal_noise_ratio(video[i], blurred[i], data_range=255))
    assert video_psnr(blurred, video) == pytest.approx(per_frame.mean())
    assert 20 < video_psnr(blurred, video) < 40
    ssim = video_ssim(blurred, video)
    assert 0.6 < ssim < 0.9
    assert video_ssim(_blur(video, 3.0), video) < ssim  # more blur, lower SSIM
    with pytest.raises(ValueError, match="one shape"):
        video_psnr(video, video[:, :128])


def test_lmd_zero_for_identical_and_translation_free():
    video = _pan(2)
    points = detect_video_landmarks(video)
    assert not np.isnan(points).any()
    assert mouth_lmd(points, points) == 0 and face_lmd(points, points) == 0
    # Mean-centring: a rigid shift of the whole face costs nothing; moving the lips does.
    assert face_lmd(points + np.array([7.0, -3.0]), points) == pytest.approx(0, abs=1e-9)
    moved = points.copy()
    moved[:, LIP_POINTS, 1] += 2.0  # the lips 2 px down, nothing else
    assert mouth_lmd(moved, points) == pytest.approx(0, abs=1e-9)  # the mouth set alone moved rigidly
    opened = points.copy()
    lower = [i for i in LIP_POINTS if points[0, i, 1] > points[0, LIP_POINTS, 1].mean()]
    opened[:, lower, 1] += 4.0
    assert mouth_lmd(opened, points) > 1.0
    assert face_lmd(moved, points) > 0
    # A frame without a face is skipped.
    missing = points.copy()
    missing[1] = np.nan
    assert landmark_distance(missing, points, LIP_POINTS)[1] == 1


def test_lmd_detects_real_differences():
    """The landmarks of the panned video against those of a blurred copy: small but non-zero."""
    video = _pan(2)
    points, blurred_points = detect_video_landmarks(video), detect_video_landmarks(_blur(video))
    assert 0 < mouth_lmd(blurred_points, points) < 5


def test_dlib68_lmd_on_the_paper_footing():
    """dlib's 68 points (the paper's LMD convention): found on the astronaut, zero for identical, mouth 48-67."""
    from faceedittalker.metrics.lmd import DLIB_FACE_POINTS, DLIB_MOUTH_POINTS, detect_dlib68

    video = _pan(2)
    points = detect_dlib68(video)
    assert points.shape == (2, 68, 2) and not np.isnan(points).any()
    assert landmark_distance(points, points, DLIB_MOUTH_POINTS) == (0.0, 2)
    # The mouth points sit below the nose tip (point 30) and inside the jaw line's span.
    assert (points[:, DLIB_MOUTH_POINTS, 1] > points[:, [30], 1]).all()
    assert len(DLIB_FACE_POINTS) == 68
    mediapipe_points = detect_video_landmarks(video)
    mouth_centre = mediapipe_points[:, LIP_POINTS].mean(axis=1)
    assert np.abs(points[:, DLIB_MOUTH_POINTS].mean(axis=1) - mouth_centre).max() < 8  # pixels of a 256 px crop
