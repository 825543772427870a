"""scripts/edit.py on the main command's model folder: the edited portrait pasted back, the grid, the sweep."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import run_script
from media_fixtures import ASTRONAUT_PATH
from PIL import Image
from scipy.ndimage import binary_dilation, binary_erosion

from faceedittalker.errors import InputError
from faceedittalker.landmarks.regions import ATTRIBUTE_REGIONS, attribute_region, region_box
from faceedittalker.pipeline import FaceEditTalkerPipeline


def test_edit_image_reconstructs_and_edits_the_face_crop(tiny_model):
    pipe = FaceEditTalkerPipeline.from_pretrained(tiny_model)
    result = pipe.edit_image(ASTRONAUT_PATH, "Eyeglasses", 0.8)
    assert result.face.shape == result.reconstruction.shape == result.edited.shape == (32, 32, 3)
    assert result.pasted.shape == result.portrait.shape == (512, 512, 3)
    assert np.abs(result.edited.astype(int) - result.reconstruction).mean() > 0.5  # the edit changes the face
    zero = pipe.edit_image(ASTRONAUT_PATH, "Eyeglasses", 0.0)
    np.testing.assert_array_equal(zero.edited, zero.reconstruction)  # alpha 0 is the reconstruction


def test_edit_guidance_is_saved_with_the_model_and_moves_the_edit_further(tiny_model, tmp_path):
    pipe = FaceEditTalkerPipeline.from_pretrained(tiny_model)
    assert pipe.edit_guidance == 0.0  # the paper's Eq. 3 alone unless the model folder says otherwise
    plain = pipe.edit_image(ASTRONAUT_PATH, "Eyeglasses", 0.5)
    guided = pipe.edit_image(ASTRONAUT_PATH, "Eyeglasses", 0.5, edit_guidance=2.0)
    np.testing.assert_array_equal(guided.reconstruction, plain.reconstruction)  # the unedited path is untouched
    change = [np.abs(r.edited.astype(float) - r.reconstruction).mean() for r in (plain, guided)]
    assert change[1] > 1.5 * change[0]
    pipe.edit_guidance = 2.0
    pipe.save_pretrained(tmp_path / "guided")
    again = FaceEditTalkerPipeline.from_pretrained(tmp_path / "guided")
    assert again.edit_guidance == 2.0
    np.testing.assert_array_equal(again.edit_image(ASTRONAUT_PATH, "Eyeglasses", 0.5).edited, guided.edited)
    with pytest.raises(InputError, match=r"edit_guidance must be a number in \[0, 10\], got 11"):
        pipe.edit_image(ASTRONAUT_PATH, "Eyeglasses", 0.5, edit_guidance=11)
    # Guidance limited to noise levels no step visits is the plain edit; the interval is saved with the model.
    outside = pipe.edit_image(ASTRONAUT_PATH, "Eyeglasses", 0.5, edit_guidance=2.0, edit_guidance_interval=[0.999, 1])
    assert np.abs(outside.edited.astype(int) - plain.edited).max() <= 1
    pipe.edit_guidance_interval = (0.0, 0.5)
    pipe.save_pretrained(tmp_path / "interval")
    assert FaceEditTalkerPipeline.from_pretrained(tmp_path / "interval").edit_guidance_interval == (0.0, 0.5)


def test_edit_region_keeps_the_rest_of_the_face_on_the_unedited_code(tiny_model):
    pipe = FaceEditTalkerPipeline.from_pretrained(tiny_model)
    assert pipe.edit_region is False  # the paper's global edit unless the model folder says otherwise
    free = pipe.edit_image(ASTRONAUT_PATH, "Eyeglasses", 0.8, edit_guidance=2.0)
    local = pipe.edit_image(ASTRONAUT_PATH, "Eyeglasses", 0.8, edit_guidance=2.0, edit_region=True)
    inside = region_box(local.crop.landmarks, ATTRIBUTE_REGIONS["Eyeglasses"], 32)
    far = ~binary_dilation(inside, iterations=3)  # beyond the mask's ramp and the denoiser's nearest reach
    change = {name: np.abs(r.edited.astype(float) - r.reconstruction).mean(-1) for name, r in
              (("free", free), ("local", local))}  # fmt: skip
    assert change["local"][inside].mean() > 0.5 * change["free"][inside].mean()  # the edit still happens there
    assert change["local"][far].mean() < 0.5 * change["free"][far].mean()
    # An attribute without a region (Male) is edited over the whole frame, as without the option.
    male = pipe.edit_image(ASTRONAUT_PATH, "Male", 0.8, edit_region=True)
    np.testing.assert_array_equal(pipe.edit_image(ASTRONAUT_PATH, "Male", 0.8).edited, male.edited)
    # The hair's region is the frame outside the inner face: the eyes, nose and mouth stay the reconstruction's.
    hair = {region: pipe.edit_image(ASTRONAUT_PATH, "Blond_Hair", 0.8, edit_guidance=2.0, edit_region=region)
            for region in (False, True)}  # fmt: skip
    face = binary_erosion(~attribute_region(hair[True].crop.landmarks, "Blond_Hair", 32), iterations=3)
    assert face.sum() >= 16
    change = {region: np.abs(r.edited.astype(float) - r.reconstruction).mean(-1)[face] for region, r in hair.items()}
    assert change[True].mean() < 0.5 * change[False].mean()
    with pytest.raises(InputError, match="edit_region must be true or false, got 'yes'"):
        pipe.edit_image(ASTRONAUT_PATH, "Eyeglasses", 0.5, edit_region="yes")


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
