"""scripts/add_attribute.py: a user-defined edit attribute from two folders of example faces (issue 10)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from helpers import run_script_main
from media_fixtures import ASTRONAUT_PATH

from faceedittalker.data.images import LabelledImageDataset
from faceedittalker.models.attributes import AttributeClassifier
from faceedittalker.pipeline import FaceEditTalkerPipeline, encode_faces
from faceedittalker.synthetic.sets import ensure_synthetic_set
from faceedittalker.testing import TINY_ATTRIBUTES


@pytest.fixture(scope="session")
def glasses_folders(tmp_path_factory):
    """Synthetic 32 px faces (face crops already) with and without eyeglasses, 5 of each, in two folders."""
    root = tmp_path_factory.mktemp("examples")
    faces = LabelledImageDataset(ensure_synthetic_set(root / "set", "attributes", 48, 32, seed=3), 32)
    glasses = faces.labels[:, faces.names.index("Eyeglasses")] > 0.5
    folders = {"with": root / "with", "without": root / "without"}
    for side, wanted in (("with", True), ("without", False)):
        folders[side].mkdir()
        chosen = [path for path, has in zip(faces.files, glasses.tolist(), strict=True) if has == wanted][:5]
        assert len(chosen) == 5
        for path in chosen:
            shutil.copy(path, folders[side])
    return folders


def _add(monkeypatch, model, folders, *extra: str) -> int:
    return run_script_main(monkeypatch, "add_attribute.py", f"model={model}", "name=Round_Glasses",
                           f"positive={folders['with']}", f"negative={folders['without']}", "crop=false",
                           *extra)  # fmt: skip


def test_added_attribute_is_in_the_library_and_separates_its_examples(monkeypatch, tmp_path, tiny_model,
                                                                      glasses_folders):
    assert _add(monkeypatch, tiny_model, glasses_folders, f"output={tmp_path / 'model'}") == 0
    pipe = FaceEditTalkerPipeline.from_pretrained(tmp_path / "model")
    assert pipe.attribute_names == [*TINY_ATTRIBUTES, "Round_Glasses"]
    original = FaceEditTalkerPipeline.from_pretrained(tiny_model)
    assert original.attribute_names == list(TINY_ATTRIBUTES)  # output= leaves the source folder alone
    library, before = pipe.attribute_library, original.attribute_library
    for name in TINY_ATTRIBUTES:  # the other directions and the standardisation are kept
        torch.testing.assert_close(library.direction(name), before.direction(name))
    torch.testing.assert_close(library.z_mean, before.z_mean)
    # The direction separates the two example sets: the faces with the attribute project further along it. The
    # random 8-dim E_sem does not make 5 + 5 faces separable one by one (measured means 0.34 vs 0.29).
    direction = library.direction("Round_Glasses").detach()
    projections = {side: library.standardise(encode_faces(pipe.video_model, sorted(folder.iterdir()), crop=False))
                   @ direction for side, folder in glasses_folders.items()}  # fmt: skip
    assert projections["with"].mean() > projections["without"].mean()
    # Eq. 3 with the new name: alpha moves the standardised code by alpha sqrt(D) along it.
    z_sem = torch.randn(2, library.config.z_dim)
    moved = library.standardise(library.edit(z_sem, {"Round_Glasses": 0.5})) @ direction
    torch.testing.assert_close(moved - library.standardise(z_sem) @ direction,
                               torch.full((2,), 0.5 * math.sqrt(library.config.z_dim)))
    # ... and it edits a portrait as the 40 do.
    result = pipe.edit_image(ASTRONAUT_PATH, "Round_Glasses", 0.8)
    assert abs(result.edited.astype(int) - result.reconstruction).mean() > 0.5


def test_overwrite_refits_in_place_and_a_model_without_a_library_gets_one(monkeypatch, tmp_path, tiny_model,
                                                                          glasses_folders):
    model = shutil.copytree(tiny_model, tmp_path / "model")
    index = json.loads((model / "model_index.json").read_text())
    assert _add(monkeypatch, model, glasses_folders, "name=Eyeglasses", "overwrite=true") == 0
    library = FaceEditTalkerPipeline.load_part(model, "attribute_library")
    assert library.names == list(TINY_ATTRIBUTES)
    before = AttributeClassifier.from_pretrained(tiny_model / "attribute_library")
    assert (library.direction("Eyeglasses") - before.direction("Eyeglasses")).abs().max() > 1e-3
    torch.testing.assert_close(library.direction("Smiling"), before.direction("Smiling"))
    assert json.loads((model / "model_index.json").read_text()) == index
    assert not [p for p in model.iterdir() if p.name.startswith(".")]  # no temporary folder left
    # Without a library: one of this attribute, standardised with the examples' statistics, listed in the index.
    shutil.rmtree(model / "attribute_library")
    del index["attribute_library"]
    (model / "model_index.json").write_text(json.dumps(index))
    assert _add(monkeypatch, model, glasses_folders) == 0
    assert FaceEditTalkerPipeline.from_pretrained(model).attribute_names == ["Round_Glasses"]
    assert json.loads((model / "model_index.json").read_text())["attribute_library"] == "AttributeClassifier"


@pytest.mark.parametrize("case, message", [
    ("exists", "error: attribute 'Eyeglasses' is in the library already (pass overwrite=true to refit it)"),
    ("name", "error: attribute name 'Round Glasses' must be letters, digits, _ and - (e.g. Round_Glasses)"),
    ("few", "error: need at least 4 positive example images for 'Round_Glasses', got 2"),
    ("unreadable", "error: cannot read image"),
    ("empty", "error: no images (.png, .jpg, .jpeg, .webp, .bmp) found in negative folder"),
])  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_no_output(monkeypatch, capsys, tmp_path, tiny_model, glasses_folders,
                                                    case, message):
    folders = dict(glasses_folders)
    extra = {"exists": ["name=Eyeglasses"], "name": ["name=Round Glasses"]}.get(case, [])
    if case == "few":
        folders["with"] = tmp_path / "few"
        folders["with"].mkdir()
        for path in sorted(glasses_folders["with"].iterdir())[:2]:
            shutil.copy(path, folders["with"])
    elif case == "unreadable":
        folders["with"] = shutil.copytree(glasses_folders["with"], tmp_path / "broken")
        (folders["with"] / "zz.png").write_bytes(b"not a png")
    elif case == "empty":
        folders["without"] = tmp_path / "empty"
        folders["without"].mkdir()
    capsys.readouterr()
    assert _add(monkeypatch, tiny_model, folders, f"output={tmp_path / 'out'}", *extra) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message) and "Traceback" not in lines[0]
    assert not (tmp_path / "out").exists()
