"""TL-ID / TG-ID on real frames with dlib's descriptor, the ArcFace ONNX path with a small stand-in model."""

from __future__ import annotations

import numpy as np
import pytest
from media_fixtures import astronaut

from faceedittalker.metrics.identity import (
    ARCFACE_SIZE,
    ARCFACE_TEMPLATE,
    MEDIAPIPE_FIVE_POINTS,
    ArcFaceEmbedder,
    DlibEmbedder,
    align_five_points,
    missing_arcface_reason,
    temporal_identity,
)


def _video(count: int = 4) -> np.ndarray:
    image = astronaut()
    return np.stack([image[10 + 5 * i: 10 + 5 * i + 320, 60 + 4 * i: 60 + 4 * i + 320] for i in range(count)])


@pytest.fixture(scope="module")
def dlib_embedder() -> DlibEmbedder:
    return DlibEmbedder()


def test_identical_videos_score_one_and_drift_scores_lower(dlib_embedder):
    embeddings = dlib_embedder(_video())
    assert embeddings.shape == (4, 128) and not np.isnan(embeddings).any()
    scores = temporal_identity(embeddings, embeddings)
    assert scores["tl_id"] == pytest.approx(1.0) and scores["tg_id"] == pytest.approx(1.0)
    # An "edit" whose identity drifts frame by frame: less consistent than the source.
    drift = embeddings + np.linspace(0, 0.6, 4)[:, None] * np.random.default_rng(0).normal(size=(1, 128)) * 0.1
    drifted = temporal_identity(drift, embeddings)
    assert drifted["tg_id"] < drifted["tl_id"] < 1.0


def test_frames_without_face_are_dropped(dlib_embedder):
    video = _video(3)
    video[1] = 128  # a blank frame: no face
    embeddings = dlib_embedder(video)
    assert np.isnan(embeddings[1]).all() and not np.isnan(embeddings[[0, 2]]).any()
    assert temporal_identity(embeddings, embeddings)["tl_id"] == pytest.approx(1.0)


def _stand_in_arcface(path) -> None:
    """A real ONNX graph with ArcFace's interface (1x3x112x112 -> 512): 8x8 average pooling and a fixed projection."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    projection = np.random.default_rng(0).normal(size=(3 * 14 * 14, 512)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "projection"], ["embedding"])],
        "stand_in_arcface",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3, ARCFACE_SIZE, ARCFACE_SIZE])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, 512])],
        [numpy_helper.from_array(projection, "projection")])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_arcface_onnx_path(tmp_path):
    path = tmp_path / "arcface.onnx"
    assert str(path) in missing_arcface_reason(path)
    _stand_in_arcface(path)
    assert missing_arcface_reason(path) is None
    embedder = ArcFaceEmbedder(path)
    video = _video(3)
    crops, found = embedder.crops(video)
    assert found.all() and crops.shape == (3, 112, 112, 3) and crops.std() > 10
    embeddings = embedder(video)
    assert embeddings.shape == (3, 512)
    assert temporal_identity(embeddings, embeddings) == pytest.approx({"tl_id": 1.0, "tg_id": 1.0})


def test_alignment_maps_points_onto_template():
    image = astronaut()
    # A synthetic face whose five points are the template scaled by 2 and shifted: the crop undoes it exactly.
    points = ARCFACE_TEMPLATE * 2 + np.array([150.0, 60.0])
    crop = align_five_points(image, points)
    expected = image[60:60 + 224:2, 150:150 + 224:2]
    assert crop.shape == (112, 112, 3)
    assert np.abs(crop[10:-10, 10:-10].astype(int) - expected[10:-10, 10:-10]).mean() < 12
    assert len(MEDIAPIPE_FIVE_POINTS) == 5
