"""Face image folders (FFHQ / CelebA-HQ layout: any tree of image files) for stage 1.

Images become (3, R, R) tensors in [-1, 1]. Unreadable files are skipped and counted: a header check at
start-up drops files that are not images at all, and a file that fails to decode later is replaced by another
sample with a warning. Optional cached VAE latents (`scripts/cache_latents.py`) spare the VAE during training.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors import safe_open
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from faceedittalker.errors import InputError
from faceedittalker.utils.files import atomic_directory, find_files

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CACHE_INDEX = "index.json"


def list_images(root: str | Path) -> list[Path]:
    """All image files under `root`, sorted; a missing or image-less folder is an `InputError`."""
    return find_files(root, IMAGE_EXTENSIONS, "dataset folder", "images", " (set data.root=DIR)")


def load_image(path: str | Path, resolution: int | None = None) -> torch.Tensor:
    """Read an image as RGB, centre-crop to square, resize; returns (3, R, R) float in [-1, 1]."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        if resolution is not None:
            side = min(img.size)
            left, top = (img.width - side) // 2, (img.height - side) // 2
            img = img.crop((left, top, left + side, top + side))
            if side != resolution:
                img = img.resize((resolution, resolution), Image.Resampling.BICUBIC)
        array = np.asarray(img, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0


class ImageFolderDataset(Dataset):
    """Images under `root` as dicts {"image": (3, R, R) in [-1, 1], "index": file index[, "latent": Z0]};
    with `hflip` every image also appears mirrored (twice the length)."""

    def __init__(self, root: str | Path, resolution: int, hflip: bool = True, latent_cache: str | None = None,
                 max_images: int | None = None):
        self.root = Path(root).expanduser()
        self.resolution = resolution
        self.hflip = hflip
        candidates = list_images(self.root)
        self.files = [p for p in candidates if _is_image(p)]
        self.num_skipped = len(candidates) - len(self.files)
        log.info("%d images in %s (%d unreadable files skipped)", len(self.files), self.root, self.num_skipped)
        if not self.files:
            raise InputError(f"none of the {len(candidates)} image files in {self.root} can be read")
        if max_images:
            self.files = self.files[:max_images]
        self.latents = LatentCache(latent_cache, self.root) if latent_cache else None

    def __len__(self) -> int:
        # Horizontal flips (DiffAE's augmentation) as mirrored copies: index i >= N is image i - N mirrored.
        # The choice is then part of the seeded shuffle, not of a global RNG, so resumed runs replay exactly.
        return 2 * len(self.files) if self.hflip else len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        # A file that fails to decode is replaced by the next one that decodes; if none does, the folder is bad.
        flip, first = divmod(index, len(self.files))
        for attempt in range(len(self.files)):
            file_index = (first + attempt) % len(self.files)
            path = self.files[file_index]
            try:
                image = load_image(path, self.resolution)
                break
            except (OSError, UnidentifiedImageError, ValueError) as err:
                reason = str(err)
                log.warning("cannot decode %s (%s); using the next image", path, reason)
        else:
            raise InputError(f"none of the {len(self.files)} images in {self.root} can be decoded "
                             f"(e.g. {path}: {reason})")
        item: dict[str, torch.Tensor | int] = {"image": image.flip(-1) if flip else image, "index": file_index}
        if self.latents is not None:
            item["latent"] = self.latents.get(path, flipped=bool(flip))
        return item


def _is_image(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            img.verify()  # header and structure only; cheap
        return True
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return False


class LatentCache:
    """Reads the safetensors shards of `scripts/cache_latents.py`: Z0 of each image and of its mirror."""

    def __init__(self, cache_dir: str | Path, image_root: Path):
        self.dir = Path(cache_dir).expanduser()
        index_file = self.dir / CACHE_INDEX
        if not index_file.is_file():
            raise InputError(f"latent cache not found: {index_file} (run scripts/cache_latents.py first)")
        index = json.loads(index_file.read_text())
        self.entries: dict[str, tuple[str, int]] = {k: tuple(v) for k, v in index["files"].items()}
        self.image_root = image_root
        self._handles: dict[str, object] = {}

    def get(self, path: Path, flipped: bool = False) -> torch.Tensor:
        key = path.relative_to(self.image_root).as_posix()
        if key not in self.entries:
            raise InputError(f"{key} is missing from the latent cache {self.dir}; re-run scripts/cache_latents.py")
        shard, row = self.entries[key]
        if shard not in self._handles:  # opened lazily: one handle per dataloader worker
            self._handles[shard] = safe_open(str(self.dir / shard), framework="pt")
        name = "latents_flipped" if flipped else "latents"
        return self._handles[shard].get_slice(name)[row : row + 1][0].float()


@torch.no_grad()
def write_latent_cache(image_root: str | Path, autoencoder: torch.nn.Module, resolution: int, output: str | Path,
                       batch_size: int = 16, shard_size: int = 4096, device: str | torch.device = "cpu") -> Path:
    """Encode every image under `image_root` (and its mirror image) with E_img into safetensors shards.

    Written to a temporary folder and renamed when complete; `index.json` maps each image's path relative
    to `image_root` to (shard, row).
    """
    from safetensors.torch import save_file

    image_root = Path(image_root).expanduser()
    files = [p for p in list_images(image_root) if _is_image(p)]
    output = Path(output).expanduser()
    with atomic_directory(output) as tmp:
        index: dict[str, tuple[str, int]] = {}
        progress = tqdm(total=len(files), desc="caching latents", unit="img")
        for shard_id, start in enumerate(range(0, len(files), shard_size)):
            shard_files = files[start:start + shard_size]
            shard_name = f"latents-{shard_id:05d}.safetensors"
            plain, mirrored = [], []
            for i in range(0, len(shard_files), batch_size):
                images = torch.stack([load_image(p, resolution) for p in shard_files[i:i + batch_size]]).to(device)
                plain.append(autoencoder.encode(images).half().cpu())  # fp16 halves the cache size
                mirrored.append(autoencoder.encode(images.flip(-1)).half().cpu())
                progress.update(len(images))
            save_file({"latents": torch.cat(plain), "latents_flipped": torch.cat(mirrored)}, str(tmp / shard_name))
            for row, path in enumerate(shard_files):
                index[path.relative_to(image_root).as_posix()] = (shard_name, row)
        progress.close()
        (tmp / CACHE_INDEX).write_text(json.dumps({"image_root": str(image_root), "resolution": resolution,
                                                   "autoencoder": autoencoder.describe(), "files": index}))
    return output


class LabelledImageDataset(ImageFolderDataset):
    """Faces with the 40 CelebA labels (CelebA-HQ layout): {"image", "index", "labels": (A,) float in {0, 1}}.

    `attribute_file` defaults to `<root>/CelebAMask-HQ-attribute-anno.txt`; rows are matched by file name.
    Images without a row are skipped and counted. With `hflip`, mirrored copies keep their labels.
    """

    def __init__(self, root: str | Path, resolution: int, attribute_file: str | None = None, hflip: bool = False,
                 max_images: int | None = None):
        from faceedittalker.data.attributes import ATTRIBUTE_FILE_NAME, read_attribute_file

        super().__init__(root, resolution, hflip=hflip)
        label_path = Path(attribute_file).expanduser() if attribute_file else self.root / ATTRIBUTE_FILE_NAME
        if not label_path.is_file():
            raise InputError(f"attribute file not found: {label_path} (set attribute_data.attribute_file=FILE)")
        self.names, rows = read_attribute_file(label_path)
        labelled = [p for p in self.files if p.name in rows]
        self.num_unlabelled = len(self.files) - len(labelled)
        if not labelled:
            raise InputError(f"no image in {self.root} has a row in {label_path}")
        self.files = labelled[:max_images] if max_images else labelled
        self.labels = torch.tensor(np.stack([rows[p.name] for p in self.files]) > 0, dtype=torch.float32)
        log.info("%d labelled images (%d without a label row skipped)", len(self.files), self.num_unlabelled)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        item = super().__getitem__(index)
        item["labels"] = self.labels[item["index"]]
        return item
