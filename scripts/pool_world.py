"""Pool world evaluations of one model on several seeds (other held-out people and speech) into one figure per goal.

    python scripts/pool_world.py "worlds=[runs/world-demo,runs/world-seed1/world.json]" output=runs/pooled.json

Runs must share the model, the judge and the edit setting (`metrics.world.POOLED_SETTINGS`) and differ in the seed.
Goal 2's rates are weighted by the faces, goals 3 and 4 are means over every clip of every run: pool the runs that
measured the goal you read (the many-face runs for goal 2, the many-clip runs for goals 3 and 4).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.metrics.world import pool_worlds
from faceedittalker.utils.files import write_json_atomic


def read_world(path: str) -> dict:
    """A world.json (or the folder holding one), read; a missing or unreadable file is an InputError."""
    file = Path(path).expanduser()
    file = file / "world.json" if file.is_dir() else file
    try:
        result = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {file} as a world.json: {err}") from err
    if not isinstance(result, dict) or "settings" not in result or "goal4_talking_edit" not in result:
        raise InputError(f"{file} is not a world.json of scripts/evaluate_world.py")
    return result


@hydra.main(config_path=str(CONFIGS_DIR), config_name="pool_world", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    worlds = [cfg.worlds] if isinstance(cfg.worlds, str) else list(cfg.worlds)
    pooled = pool_worlds([read_world(path) for path in worlds])
    if cfg.output:
        write_json_atomic(Path(cfg.output).expanduser(), pooled)
    edits, lips, talking = pooled["goal2_edit"], pooled["goal3_lipsync"], pooled["goal4_talking_edit"]
    print(f"seeds {pooled['seeds']}: {pooled['settings']['edit']} alpha {pooled['settings']['alpha']}, "
          f"guidance {pooled['settings']['edit_guidance']} at t/T in {pooled['settings']['edit_guidance_interval']}")
    for direction in ("add", "remove"):
        d = edits[direction]
        print(f"goal 2  {direction}: {d['success_rate']:.0%} of {d['faces']} faces, others kept "
              f"{d['others_kept_rate']:.0%}")
    for reader in ("judge_r", "landmarker_r"):
        print(f"goal 3  {reader} over {lips['clips']} clips: "
              + ", ".join(f"{c} {r}" for c, r in lips[reader].items()))
    print(f"goal 4  {talking['judge_rate_without_edit']} -> {talking['judge_rate_with_edit']} of the frames over "
          f"{talking['clips']} clips ({talking['clips_below_90_percent']} below 90 %); r change: judge "
          f"{talking['judge_r_change']}, landmarker {talking['landmarker_r_change']}; goal met: {talking['goal_met']}")


if __name__ == "__main__":
    main()
