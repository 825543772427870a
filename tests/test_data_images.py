"""Image folders: FFHQ-style trees, corrupt files skipped and counted, clear errors, cached latents."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from faceedittalker.data.images import ImageFolderDataset, write_latent_cache
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.models.autoencoder import IdentityAutoencoder
from faceedittalker.synthetic.portraits import ensure_real_face_folder, real_face_crops


@pytest.fixture
def image_tree(tmp_path):
    root = tmp_path / "ffhq"
    (root / "00000").mkdir(parents=True)
    (root / "01000").mkdir()
    faces = real_face_crops(3, 24)
    Image.fromarray(faces[0]).save(root / "00000" / "a.png")
    Image.fromarray(faces[1]).save(root / "00000" / "b.jpg")
    Image.fromarray(faces[2]).resize((30, 24)).save(root / "01000" / "c.webp")
    (root / "01000" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "notes.txt").write_text("not an image")
    return root


def test_image_folder_reads_nested_images_and_counts_corrupt_ones(image_tree):
    ds = ImageFolderDataset(image_tree, resolution=16, hflip=False)
    assert len(ds) == 3 and ds.num_skipped == 1
    item = ds[2]
    assert item["image"].shape == (3, 16, 16)  # non-square c.webp is centre-cropped then resized
    assert -1 <= item["image"].min() < item["image"].max() <= 1


def test_hflip_adds_a_mirrored_copy_of_every_image(image_tree):
    plain = ImageFolderDataset(image_tree, 16, hflip=False)
    mirrored = ImageFolderDataset(image_tree, 16, hflip=True)
    assert len(mirrored) == 2 * len(plain) == 6
    torch.testing.assert_close(mirrored[1]["image"], plain[1]["image"])
    torch.testing.assert_close(mirrored[4]["image"], plain[1]["image"].flip(-1))
    assert mirrored[4]["index"] == 1


def test_missing_and_empty_folders_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="dataset folder not found"):
        ImageFolderDataset(tmp_path / "nope", 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        ImageFolderDataset(tmp_path / "empty", 16)


def test_latent_cache_round_trip(image_tree, tmp_path):
    cache = write_latent_cache(image_tree, IdentityAutoencoder(), 16, tmp_path / "latents", batch_size=2,
                               shard_size=2)
    assert sorted(p.name for p in cache.glob("*.safetensors")) == ["latents-00000.safetensors",
                                                                  "latents-00001.safetensors"]
    ds = ImageFolderDataset(image_tree, 16, hflip=False, latent_cache=str(cache))
    for i in range(len(ds)):
        item = ds[i]
        # Identity E_img: the cached Z0 is the image itself (fp16 storage).
        torch.testing.assert_close(item["latent"], item["image"], atol=2e-3, rtol=0)
    with pytest.raises(InputError, match="latent cache not found"):
        ImageFolderDataset(image_tree, 16, latent_cache=str(tmp_path / "nope"))


def test_real_face_folder_is_written_once_with_distinct_faces(tmp_path):
    root = ensure_real_face_folder(tmp_path / "faces", count=4, resolution=32)
    files = sorted(root.glob("*.png"))
    assert len(files) == 4
    faces = np.stack([np.asarray(Image.open(f)) for f in files]).astype(float)
    assert faces.shape == (4, 32, 32, 3)
    assert min(np.abs(faces[i] - faces[j]).mean() for i in range(4) for j in range(i)) > 3
    mtime = files[0].stat().st_mtime
    ensure_real_face_folder(tmp_path / "faces", count=4, resolution=32)
    assert files[0].stat().st_mtime == mtime  # not regenerated


def _truncated_jpegs(folder, count: int) -> None:
    """JPEGs cut in half: their header passes the start-up check, decoding them fails."""
    folder.mkdir()
    for i, face in enumerate(real_face_crops(count, 128)):
        Image.fromarray(face).save(folder / f"{i}.jpg")
        data = (folder / f"{i}.jpg").read_bytes()
        (folder / f"{i}.jpg").write_bytes(data[: len(data) // 2])


def test_a_corrupt_image_is_replaced_by_the_next_one_that_decodes(tmp_path):
    _truncated_jpegs(tmp_path / "faces", 2)
    Image.fromarray(real_face_crops(3, 32)[2]).save(tmp_path / "faces" / "2.png")
    dataset = ImageFolderDataset(tmp_path / "faces", 32, hflip=True)
    assert len(dataset) == 6
    item = dataset[0]  # 0.jpg fails, 1.jpg fails, 2.png is used
    assert item["index"] == 2 and item["image"].shape == (3, 32, 32)
    mirrored = dataset[3]  # the mirror of 0.jpg: the mirror of 2.png
    torch.testing.assert_close(mirrored["image"], item["image"].flip(-1))


def test_a_folder_where_every_image_is_corrupt_is_one_clear_error(tmp_path, capsys):
    # Before: the next-image fallback recursed until RecursionError.
    _truncated_jpegs(tmp_path / "faces", 3)
    dataset = ImageFolderDataset(tmp_path / "faces", 32, hflip=True)
    with pytest.raises(SystemExit) as exited:
        exit_on_input_error(lambda: dataset[4])()
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: none of the 3 images in") and "can be decoded" in lines[0]
