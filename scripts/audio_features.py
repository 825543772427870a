"""wav2vec2 (or log-mel) features at the video frame rate, for one file or for every clip folder under a root.

    python scripts/audio_features.py input=speech.wav output=speech.npy encoder=facebook/wav2vec2-base-960h
    python scripts/audio_features.py input=CLIPS_DIR encoder=/models/wav2vec2-base-960h
    python scripts/audio_features.py input=CLIPS_DIR encoder=logmel80     # no weights: 80 log-mel bands

A single file must be usable speech (not unreadable, not shorter than 0.2 s, not silent): otherwise one line
`error: ...` and exit code 2, and no output file. Clip folders get `audio_features/<encoder>.npy`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR
from faceedittalker.data.audio import check_speech, load_audio
from faceedittalker.data.clips import list_clips
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.models.audio_encoder import audio_encoder_from_name
from faceedittalker.utils.files import atomic_write


@hydra.main(config_path=str(CONFIGS_DIR), config_name="audio_features", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    source = Path(cfg.input).expanduser()
    if not source.exists():
        raise InputError(f"input not found: {source}")
    if source.is_file():
        waveform = load_audio(source)  # read before loading the model: bad input fails fast
        check_speech(waveform, source=str(source))
        encoder = audio_encoder_from_name(cfg.encoder, device=cfg.device, layer=cfg.layer, fps=cfg.fps)
        features = encoder(waveform).numpy()
        output = Path(cfg.output) if cfg.output else source.with_name(f"{source.stem}.{encoder.slug}.npy")
        with atomic_write(output) as tmp, open(tmp, "wb") as file:  # a file object: np.save adds no ".npy"
            np.save(file, features)
        print(f"wrote {output}: {features.shape[0]} frames x {features.shape[1]} features")
        return
    clips = list_clips(source)
    encoder = audio_encoder_from_name(cfg.encoder, device=cfg.device, layer=cfg.layer, fps=cfg.fps)
    encoder.cache_clip_features(clips)
    print(f"features of {len(clips)} clips cached as audio_features/{encoder.slug}.npy")


if __name__ == "__main__":
    main()
