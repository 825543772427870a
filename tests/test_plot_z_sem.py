"""Fig. 6: scripts/plot_z_sem.py, the PCA of z_sem of labelled synthetic faces coloured by attribute."""

from __future__ import annotations

import numpy as np
import torch
from helpers import run_script_main
from PIL import Image

from faceedittalker.metrics.semantics import principal_components


def test_principal_components_find_the_axes_of_largest_variance():
    generator = torch.Generator().manual_seed(0)
    # Spread 30 along (1, 1, 0, 0)/sqrt(2), 10 along e3 (orthogonal, centred columns: exactly the sample's
    # principal axes), ~0 elsewhere.
    draws = torch.randn(500, 2, generator=generator)
    spread = torch.linalg.qr(draws - draws.mean(0)).Q * torch.tensor([30.0, 10.0])
    axes = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    axes[0] /= 2**0.5
    codes = spread @ axes + 5 + 1e-4 * torch.randn(500, 4, generator=generator)
    points = principal_components(codes, 2)
    assert points.shape == (500, 2)
    torch.testing.assert_close(points.mean(0), torch.zeros(2), atol=1e-5, rtol=0)  # centred
    torch.testing.assert_close(points[:, 0], spread[:, 0], atol=0.01, rtol=0)  # the first axis, sign fixed
    torch.testing.assert_close(points[:, 1], spread[:, 1], atol=0.01, rtol=0)  # e3: largest loading positive


def test_plot_script_draws_one_panel_per_attribute_with_both_classes(monkeypatch, tmp_path, tiny_model):
    output = tmp_path / "pca.png"
    code = run_script_main(monkeypatch, "plot_z_sem.py", f"model={tiny_model}", "attributes=[Eyeglasses,Male]",
                           "count=40", f"cache_dir={tmp_path / 'cache'}", "panel=128", f"output={output}")  # fmt: skip
    assert code == 0
    picture = np.asarray(Image.open(output).convert("RGB"))
    assert picture.shape == (128, 2 * 128, 3)
    for panel in (picture[:, :128], picture[:, 128:]):  # faces with (orange) and without (blue) in each panel
        assert (panel == (230, 120, 30)).all(-1).sum() > 20 and (panel == (40, 90, 200)).all(-1).sum() > 20
    assert not np.array_equal(picture[:, :128], picture[:, 128:])  # the colouring differs per attribute


def test_plot_script_unknown_attribute_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, tiny_model):
    code = run_script_main(monkeypatch, "plot_z_sem.py", f"model={tiny_model}", "attributes=[Glasses]",
                           f"output={tmp_path / 'pca.png'}")  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: attributes must be some of")
    assert "(unknown: Glasses)" in lines[0] and not (tmp_path / "pca.png").exists()
