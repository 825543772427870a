"""Fig. 7: scripts/interpolate.py, a row of faces from one portrait to another (z_sem lerped, Z_T slerped)."""

from __future__ import annotations

import numpy as np
import torch
from helpers import run_script_main
from media_fixtures import ASTRONAUT_PATH, astronaut
from PIL import Image

from faceedittalker.pipeline import FaceEditTalkerPipeline, slerp


def test_slerp_keeps_the_ends_and_the_norm_of_orthogonal_unit_vectors():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    middle = slerp(a, b, 0.5)
    torch.testing.assert_close(middle, torch.tensor([0.5**0.5, 0.5**0.5]))  # on the circle; a lerp has norm 0.71
    torch.testing.assert_close(slerp(a, 2 * a, 0.25), 1.25 * a)  # parallel: the lerp


def test_interpolation_row_ends_are_the_two_reconstructions(monkeypatch, tmp_path, tiny_model):
    mirrored = tmp_path / "mirrored.png"
    Image.fromarray(np.ascontiguousarray(astronaut()[:, ::-1])).save(mirrored)  # another face crop and pose
    output = tmp_path / "row.png"
    code = run_script_main(monkeypatch, "interpolate.py", f"model={tiny_model}", f"a={ASTRONAUT_PATH}",
                           f"b={mirrored}", "steps=5", f"output={output}")  # fmt: skip
    assert code == 0
    row = np.asarray(Image.open(output))
    assert row.shape == (34 + 2, 5 * 34 + 2, 3)  # 5 faces of 32 px, 2 px padding
    faces = [row[2:34, 2 + 34 * i: 34 * (i + 1)] for i in range(5)]
    pipe = FaceEditTalkerPipeline.from_pretrained(tiny_model)
    for end, portrait in ((faces[0], ASTRONAUT_PATH), (faces[-1], mirrored)):
        np.testing.assert_array_equal(end, pipe.edit_image(portrait, "Eyeglasses", 0.0).reconstruction)
    # The faces between differ from both ends, and the ends from each other.
    gaps = [np.abs(faces[i].astype(int) - faces[i + 1]).mean() for i in range(4)]
    assert np.abs(faces[0].astype(int) - faces[-1]).mean() > 1 and min(gaps) > 0


def test_interpolation_of_fewer_than_two_faces_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, tiny_model):
    code = run_script_main(monkeypatch, "interpolate.py", f"model={tiny_model}", f"a={ASTRONAUT_PATH}",
                           f"b={ASTRONAUT_PATH}", "steps=1", f"output={tmp_path / 'row.png'}")  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and lines == ["error: steps must be a whole number of at least 2 (both ends), got 1"]
    assert not (tmp_path / "row.png").exists()
