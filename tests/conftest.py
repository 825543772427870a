"""Shared fixtures. Helper functions live in `helpers.py` (tests/ is on sys.path, not a package)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """One cache for the whole session, so the synthetic set of `experiment=tiny` is generated once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A complete tiny random model folder (32 px, pixel space, log-mel audio, five attributes), built once."""
    from faceedittalker.testing import build_random_model

    return build_random_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def short_speech(tmp_path_factory) -> Path:
    """0.7 s of the committed English speech as a 16 kHz wav (18 video frames: three windows of the tiny model)."""
    from media_fixtures import speech_path, write_audio

    from faceedittalker.data.audio import load_audio

    waveform = load_audio(speech_path("en_female"))
    return write_audio(tmp_path_factory.mktemp("speech") / "short.wav", waveform[2000 : 2000 + 11200], 16000)
