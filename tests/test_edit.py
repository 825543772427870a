"""scripts/edit.py on the main command's model folder: the edited portrait pasted back, the grid, the sweep."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import run_script
from media_fixtures import ASTRONAUT_PATH
from PIL import Image

from faceedittalker.pipeline import FaceEditTalkerPipeline


def test_edit_image_reconstructs_and_edits_the_face_crop(tiny_model):
    pipe = FaceEditTalkerPipeline.from_pretrained(tiny_model)
    result = pipe.edit_image(ASTRONAUT_PATH, "Eyeglasses", 0.8)
    assert result.face.shape == result.reconstruction.shape == result.edited.shape == (32, 32, 3)
    assert result.pasted.shape == result.portrait.shape == (512, 512, 3)
    assert np.abs(result.edited.astype(int) - result.reconstruction).mean() > 0.5  # the edit changes the face
    zero = pipe.edit_image(ASTRONAUT_PATH, "Eyeglasses", 0.0)
    np.testing.assert_array_equal(zero.edited, zero.reconstruction)  # alpha 0 is the reconstruction


@pytest.mark.parametrize("extra, shape", [([], (512, 512, 3)), (["grid=true"], (36, 3 * 34 + 2, 3)),
                                          (["sweep=true"], (36, 8 * 34 + 2, 3))])  # fmt: skip
def test_edit_script_writes_the_portrait_grid_or_sweep(tiny_model, tmp_path, extra, shape):
    output = tmp_path / "out.png"
    result = run_script("edit.py", f"ref={ASTRONAUT_PATH}", "edit=[Eyeglasses,Smiling]", "alpha=[0.8,-0.3]",
                        f"model={tiny_model}", f"output={output}", *extra)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert np.asarray(Image.open(output)).shape == shape
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_edit_script_bad_edit_is_one_line_and_no_file(tiny_model, tmp_path):
    result = run_script("edit.py", f"ref={ASTRONAUT_PATH}", "edit=Glasses", "alpha=0.5", f"model={tiny_model}",
                        f"output={tmp_path / 'out.png'}")  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: unknown attribute 'Glasses'; did you mean 'Eyeglasses'?")
    assert list(tmp_path.iterdir()) == []
