"""SyncNet: the released weights' layout, the offset / min-distance / confidence logic, the real input path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from media_fixtures import astronaut, speech_path

from faceedittalker.data.audio import load_audio
from faceedittalker.metrics.lipsync import (
    SyncNet,
    audio_mfcc,
    face_boxes,
    load_syncnet,
    missing_syncnet_reason,
    num_windows,
    offset_distances,
    sync_embeddings,
    sync_scores,
    syncnet_crops,
)

# (key prefix, layer index) -> parameter shapes, written out from the reference definition (SyncNetModel.py's
# class S): Conv(in, out, kernel) layers and BatchNorm(channels) layers at their positions in each Sequential.
CONV_LAYERS = {
    "netcnnaud": {0: (64, 1, 3, 3), 4: (192, 64, 3, 3), 8: (384, 192, 3, 3), 11: (256, 384, 3, 3),
                  14: (256, 256, 3, 3), 18: (512, 256, 5, 4)},
    "netcnnlip": {0: (96, 3, 5, 7, 7), 4: (256, 96, 1, 5, 5), 8: (256, 256, 1, 3, 3), 11: (256, 256, 1, 3, 3),
                  14: (256, 256, 1, 3, 3), 18: (512, 256, 1, 6, 6)},
    "netfcaud": {0: (512, 512), 3: (1024, 512)},
    "netfclip": {0: (512, 512), 3: (1024, 512)},
}
NORM_LAYERS = {"netcnnaud": {1: 64, 5: 192, 9: 384, 12: 256, 15: 256, 19: 512},
               "netcnnlip": {1: 96, 5: 256, 9: 256, 12: 256, 15: 256, 19: 512},
               "netfcaud": {1: 512}, "netfclip": {1: 512}}  # fmt: skip


def reference_table() -> dict[str, tuple[int, ...]]:
    table = {}
    for prefix, layers in CONV_LAYERS.items():
        for index, shape in layers.items():
            table[f"{prefix}.{index}.weight"] = shape
            table[f"{prefix}.{index}.bias"] = (shape[0],)
    for prefix, layers in NORM_LAYERS.items():
        for index, channels in layers.items():
            for name in ("weight", "bias", "running_mean", "running_var"):
                table[f"{prefix}.{index}.{name}"] = (channels,)
            table[f"{prefix}.{index}.num_batches_tracked"] = ()
    return table


def test_state_dict_matches_reference_definition(tmp_path):
    model = SyncNet()
    ours = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert ours == reference_table()
    # A state dict as the release stores it (no num_batches_tracked) loads; a foreign one is refused.
    state = {k: torch.randn(v.shape) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, tmp_path / "s.model")
    loaded = load_syncnet(tmp_path / "s.model")
    assert torch.equal(loaded.netcnnlip[0].weight, state["netcnnlip.0.weight"])
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "bad.model")
    with pytest.raises(ValueError, match="not a SyncNet state dict"):
        load_syncnet(tmp_path / "bad.model")
    assert missing_syncnet_reason(tmp_path).startswith("LSE-D/LSE-C skipped")
    assert str(tmp_path / "syncnet_v2.model") in missing_syncnet_reason(tmp_path)


def reference_offset_distances(lips: torch.Tensor, audio: torch.Tensor, vshift: int) -> torch.Tensor:
    """The reference's loop, written out: per window, distances to the audio embeddings at -vshift..vshift."""
    padded = torch.cat([torch.zeros(vshift, audio.shape[1]), audio, torch.zeros(vshift, audio.shape[1])])
    rows = [torch.nn.functional.pairwise_distance(lips[i][None].repeat(2 * vshift + 1, 1),
                                                  padded[i:i + 2 * vshift + 1]) for i in range(len(lips))]
    return torch.stack(rows, 1).mean(1)


@pytest.mark.parametrize("shift", [5, -3, 0])
def test_known_shift_is_found(shift):
    generator = torch.Generator().manual_seed(1)
    frames = 80
    content = torch.randn(frames + 40, 64, generator=generator)
    lips = content[20:20 + frames]
    # Audio window j carries what video window j + shift shows (plus noise): the video lags by `shift`.
    audio = content[20 + shift: 20 + shift + frames] + 0.1 * torch.randn(frames, 64, generator=generator)
    scores = sync_scores(lips, audio)
    assert scores["av_offset"] == shift
    distances = offset_distances(lips, audio)
    assert torch.allclose(distances, reference_offset_distances(lips, audio, 15), atol=1e-5)
    assert scores["lse_d"] == pytest.approx(float(distances.min()))
    assert scores["lse_c"] == pytest.approx(float(distances.median() - distances.min()))
    assert scores["lse_d"] < 0.2 * float(distances.median()) and scores["lse_c"] > 5


def test_real_speech_and_crops_through_random_syncnet():
    """The full input path on the astronaut and committed speech: MFCC at 100 Hz, window count, 224 px crops."""
    waveform = load_audio(speech_path())[: 16000 * 12 // 25]  # 12 frames of speech
    mfcc = audio_mfcc(waveform)
    assert mfcc.shape[0] == 13 and abs(mfcc.shape[1] - 48) <= 1
    assert num_windows(12, len(waveform)) == 7
    image = astronaut()
    frames = np.stack([np.roll(image, 2 * i, axis=1) for i in range(12)])
    points = np.tile(np.array([[180.0, 40.0], [270.0, 200.0]]), (12, 1, 1))
    points[3] = np.nan  # a frame without a face takes its neighbour's box
    crops = syncnet_crops(frames, face_boxes(points))
    assert crops.shape == (12, 224, 224, 3) and crops.dtype == np.uint8
    # BGR, with the reference's grey-110 padding outside the frame: a red frame gives channel 2 = 255.
    red = np.zeros((12, 512, 512, 3), np.uint8)
    red[..., 0] = 255
    red_crop = syncnet_crops(red, face_boxes(np.tile(np.array([[0.0, 0.0], [400.0, 400.0]]), (12, 1, 1))))[0]
    assert tuple(red_crop[150, 112]) == (0, 0, 255)  # inside the frame
    assert tuple(red_crop[5, 5]) == (110, 110, 110)  # the crop reaches left of the frame: padding
    torch.manual_seed(0)
    lips, audio = sync_embeddings(SyncNet().eval(), crops, waveform, batch_size=4)
    assert lips.shape == audio.shape == (7, 1024)
    scores = sync_scores(lips, audio)
    assert -15 <= scores["av_offset"] <= 15 and scores["lse_c"] >= 0
