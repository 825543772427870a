"""Stage 2 (Alg. 2): the linear attribute classifier, Eq. 3 edits, labelled image folders, the stage itself."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import compose_train_config, run_script, tiny_overrides
from PIL import Image

from faceedittalker.data.attributes import write_attribute_file
from faceedittalker.data.images import LabelledImageDataset
from faceedittalker.errors import InputError
from faceedittalker.models.attributes import AttributeClassifier
from faceedittalker.stages import STAGES
from faceedittalker.stages.stage2 import positive_weights
from faceedittalker.synthetic.portraits import real_face_crops
from faceedittalker.training.trainer import Trainer

NAMES = ["Eyeglasses", "Smiling", "Young"]


def test_edit_moves_the_standardised_code_by_alpha_sqrt_d_along_the_direction():
    torch.manual_seed(0)
    clf = AttributeClassifier(names=NAMES, z_dim=16)
    clf.set_statistics(torch.randn(100, 16) * 3 + 1)
    z = torch.randn(4, 16) * 3 + 1
    edited = clf.edit(z, {"Smiling": 0.25})
    step = clf.standardise(edited) - clf.standardise(z)
    torch.testing.assert_close(step.norm(dim=1), torch.full((4,), 0.25 * math.sqrt(16)))
    torch.testing.assert_close(step / step.norm(dim=1, keepdim=True), clf.direction("Smiling").expand(4, -1))
    # Moving along w raises that attribute's logit, and alpha = 0 changes nothing.
    assert (clf(edited)[:, 1] > clf(z)[:, 1]).all()
    torch.testing.assert_close(clf.edit(z, {"Smiling": 0.0}), z)
    both = clf.edit(z, {"Smiling": 0.25, "Young": -0.5})
    torch.testing.assert_close(both, clf.edit(clf.edit(z, {"Smiling": 0.25}), {"Young": -0.5}))


def test_keep_leaves_the_kept_scores_where_they_were_and_still_moves_the_edited_one():
    """InterFaceGAN's conditional edit: Smiling's direction is built to lean on Young's (as blond leans on young
    faces in the world); the plain edit moves Young's score with it, the conditional one does not."""
    torch.manual_seed(0)
    clf = AttributeClassifier(names=NAMES, z_dim=16)
    with torch.no_grad():
        young = torch.randn(16)
        clf.linear.weight[2] = young
        clf.linear.weight[1] = 0.8 * young / young.norm() * clf.linear.weight[1].norm() + 0.3 * torch.randn(16)
    clf.set_statistics(torch.randn(100, 16) * 2)
    z = torch.randn(4, 16) * 2
    plain = clf(clf.edit(z, {"Smiling": 0.5})) - clf(z)
    kept = clf(clf.edit(z, {"Smiling": 0.5}, keep=["Young", "Eyeglasses"])) - clf(z)
    assert plain[:, 2].abs().min() > 0.5  # the plain edit drags Young along
    torch.testing.assert_close(kept[:, [0, 2]], torch.zeros(4, 2), atol=1e-4, rtol=0)
    assert (kept[:, 1] > 0.5).all()  # Smiling still rises
    direction = clf.conditional_direction("Smiling", ["Young"]).detach()
    assert abs(float(direction.norm()) - 1) < 1e-5 and abs(float(direction @ clf.direction("Young").detach())) < 1e-5
    torch.testing.assert_close(clf.conditional_direction("Smiling"), clf.direction("Smiling"))
    step = clf.standardise(clf.edit(z, {"Smiling": 0.5}, keep=["Young"])) - clf.standardise(z)
    torch.testing.assert_close(step.norm(dim=1), torch.full((4,), 0.5 * math.sqrt(16)))  # alpha keeps its scale


def test_bad_keeps_are_input_errors():
    clf = AttributeClassifier(names=NAMES, z_dim=8)
    with pytest.raises(InputError, match="Smiling cannot be both edited and kept"):
        clf.edit(torch.zeros(1, 8), {"Smiling": 0.3}, keep=["Smiling"])
    with pytest.raises(InputError, match="unknown attribute 'Yung'.*Young"):
        clf.edit(torch.zeros(1, 8), {"Smiling": 0.3}, keep=["Yung"])
    with torch.no_grad():
        clf.linear.weight[1] = 2 * clf.linear.weight[2]  # Smiling's direction is Young's
    with pytest.raises(InputError, match="Smiling cannot be edited while keeping Young"):
        clf.edit(torch.zeros(1, 8), {"Smiling": 0.3}, keep=["Young"])


def test_bad_edits_are_input_errors():
    clf = AttributeClassifier(names=NAMES, z_dim=8)
    with pytest.raises(InputError, match="unknown attribute 'Glasses'.*Eyeglasses"):
        clf.edit(torch.zeros(1, 8), {"Glasses": 0.3})
    with pytest.raises(InputError, match="out of range"):
        clf.edit(torch.zeros(1, 8), {"Eyeglasses": 1.5})


def test_classifier_recovers_a_planted_attribute_direction():
    # z ~ N(0, I); the label is the sign of a hidden direction (plus noise): C's weight row must find it.
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 16, generator=gen)
    w_true = torch.randn(16, generator=gen)
    labels = ((z @ w_true + 0.3 * torch.randn(2000, generator=gen)) > 0).float()[:, None]
    clf = AttributeClassifier(names=["Eyeglasses"], z_dim=16)
    clf.set_statistics(z)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-2)
    for _ in range(300):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(clf(z), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    w_std = w_true * clf.z_std  # the same direction in standardised coordinates
    cosine = torch.dot(clf.direction("Eyeglasses"), w_std / w_std.norm()).item()
    assert cosine > 0.95


def test_classifier_round_trips_through_save_pretrained(tmp_path):
    clf = AttributeClassifier(names=NAMES, z_dim=8)
    clf.set_statistics(torch.randn(50, 8) * 2)
    clf.save_pretrained(tmp_path / "c")
    loaded = AttributeClassifier.from_pretrained(tmp_path / "c")
    assert loaded.names == NAMES
    z = torch.randn(3, 8)
    torch.testing.assert_close(loaded(z), clf(z))
    torch.testing.assert_close(loaded.z_std, clf.z_std)


def test_labelled_folder_matches_rows_by_file_name(tmp_path):
    faces = real_face_crops(3, 16)
    for i, face in enumerate(faces):
        Image.fromarray(face).save(tmp_path / f"{i}.jpg")
    write_attribute_file(tmp_path / "CelebAMask-HQ-attribute-anno.txt", NAMES,
                         {"0.jpg": [1, -1, 1], "2.jpg": [-1, 1, 1], "9.jpg": [1, 1, 1]})
    ds = LabelledImageDataset(tmp_path, 16)
    assert len(ds) == 2 and ds.num_unlabelled == 1 and ds.names == NAMES
    assert ds[0]["labels"].tolist() == [1.0, 0.0, 1.0] and ds[1]["labels"].tolist() == [0.0, 1.0, 1.0]
    mirrored = LabelledImageDataset(tmp_path, 16, hflip=True)
    assert mirrored[3]["labels"].tolist() == [0.0, 1.0, 1.0]  # the mirror of 2.jpg keeps its labels
    with pytest.raises(InputError, match="attribute file not found"):
        LabelledImageDataset(tmp_path, 16, attribute_file=str(tmp_path / "missing.txt"))


def test_class_balanced_bce_predicts_a_rare_attribute_that_plain_bce_leaves_to_the_prior():
    # A rare attribute (~4 % positives), a noisy function of a hidden direction. Eq. 12's plain BCE predicts the
    # prior (balanced accuracy 0.5); positives weighted by negatives / positives predict it. Both find the
    # direction (what an edit uses): the weighting moves the threshold, not the direction.
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 16, generator=gen)
    w_true = torch.randn(16, generator=gen)
    score = z @ w_true / w_true.norm() + torch.randn(4000, generator=gen)
    labels = (score > 1.75 * math.sqrt(2)).float()[:, None]
    weights = positive_weights(labels)
    assert weights.item() == pytest.approx((labels == 0).sum().item() / labels.sum().item())
    assert positive_weights(torch.zeros(5, 2)).tolist() == [1.0, 1.0]  # no positives: nothing to weigh

    def train(pos_weight):
        clf = AttributeClassifier(names=["Eyeglasses"], z_dim=16)
        clf.set_statistics(z)
        opt = torch.optim.Adam(clf.parameters(), lr=1e-2)
        for _ in range(200):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(clf(z), labels, pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
        predicted, positive = clf(z).detach() > 0, labels.bool()
        accuracy = 0.5 * (predicted[positive].float().mean() + (~predicted[~positive]).float().mean()).item()
        w_std = w_true * clf.z_std
        return accuracy, torch.dot(clf.direction("Eyeglasses"), w_std / w_std.norm()).item()

    (plain, plain_cos), (balanced, balanced_cos) = train(None), train(weights)
    print(f"balanced accuracy / cosine: plain BCE {plain:.3f} / {plain_cos:.3f}, weighted {balanced:.3f} / "
          f"{balanced_cos:.3f}")
    assert plain < 0.6 and balanced > 0.8
    assert plain_cos > 0.9 and balanced_cos > 0.9


def test_stage2_trains_on_the_codes_of_a_stage1_export(tmp_path, tiny_cache):
    cfg1 = compose_train_config(tiny_overrides(tiny_cache))
    stage1_export = Trainer(cfg1, STAGES[1](cfg1), tmp_path / "stage1").fit()
    cfg2 = compose_train_config(tiny_overrides(tiny_cache, f"stage2.feature_space={stage1_export}",
                                               "attribute_data.root.count=64", "stage2.num_preview_images=2",
                                               experiment="tiny/stage2"))
    run_dir = tmp_path / "stage2"
    export = Trainer(cfg2, STAGES[2](cfg2), run_dir).fit()
    clf = AttributeClassifier.from_pretrained(export / "attribute_classifier")
    assert len(clf.names) == 40 and clf.config.z_dim == 64
    report = json.loads((export / "attribute_accuracy.json").read_text())
    assert set(report["per_attribute"]) == set(clf.names)
    assert all(v is None or 0 <= v <= 1 for v in report["per_attribute"].values())
    # Grid: 2 preview faces x (input, reconstruction, 3 edits) at 32 px.
    grid = np.asarray(Image.open(run_dir / "samples" / "step-00000004.png"))
    assert grid.shape == (2 * 34 + 2, 5 * 34 + 2, 3)



def test_stage2_without_a_stage1_model_is_a_clear_error(tmp_path, tiny_cache):
    result = run_script("train.py", *tiny_overrides(tiny_cache, "stage2.feature_space=null", experiment="tiny/stage2"),
                        f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "stage2.feature_space" in result.stderr
    assert "Traceback" not in result.stderr
