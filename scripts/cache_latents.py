"""Cache the VAE latents Z0 of an image folder (and of its mirror images) as safetensors shards.

    python scripts/cache_latents.py data.root=data/ffhq output=cache/ffhq_latents device=cuda
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR
from faceedittalker.data.images import write_latent_cache
from faceedittalker.errors import exit_on_input_error


@hydra.main(config_path=str(CONFIGS_DIR), config_name="cache_latents", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    autoencoder = instantiate(cfg.autoencoder, _convert_="all").to(cfg.device)
    out = write_latent_cache(cfg.data.root, autoencoder, cfg.resolution, cfg.output, cfg.batch_size,
                             cfg.shard_size, cfg.device)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
