"""scripts/infer.py, the main command: a written video, and every bad input of issue 9 as one line, exit code 2, no
traceback and no output file. A representative few run as a user runs them (subprocess), the rest through the
decorated `main` in this process (fast)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from helpers import run_script, run_script_main
from media_fixtures import ASTRONAUT_PATH, astronaut, speech_path, write_audio
from PIL import Image

from faceedittalker.data.audio import load_audio


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Call the Hydra main as the command line would; returns (exit code, stderr)."""
    code = run_script_main(monkeypatch, "infer.py", *args)
    return code, capsys.readouterr().err


def test_infer_writes_the_video_and_the_landmark_video(tiny_model, short_speech, tmp_path):
    output = tmp_path / "talk.mp4"
    result = run_script("infer.py", f"ref={ASTRONAUT_PATH}", f"audio={short_speech}", "edit=[Eyeglasses,Smiling]",
                        "alpha=[0.8,-0.3]", "ramp=[0,0.4]", f"model={tiny_model}", f"output={output}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"wrote {output} (18 frames" in result.stdout
    import av

    for path in (output, tmp_path / "talk_landmarks.mp4"):
        with av.open(str(path)) as container:
            assert sum(1 for _ in container.decode(video=0)) == math.ceil(len(load_audio(short_speech)) / 640)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4", "talk_landmarks.mp4"]


@pytest.mark.parametrize("args, message", [
    (["ref=/nonexistent/face.png"], "error: portrait not found: /nonexistent/face.png"),
    (["edit=Eyeglases", "alpha=0.5"], "error: unknown attribute 'Eyeglases'; did you mean 'Eyeglasses'?"),
])  # fmt: skip
def test_bad_input_from_the_command_line_is_one_line_and_exit_code_2(tiny_model, short_speech, tmp_path, args,
                                                                      message):
    output = tmp_path / "out.mp4"
    result = run_script("infer.py", f"ref={ASTRONAUT_PATH}", f"audio={short_speech}", f"model={tiny_model}",
                        f"output={output}", *args)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(message)
    assert "Traceback" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "notes.png").write_text("this is not an image\n")
    (folder / "corrupt.jpg").write_bytes(ASTRONAUT_PATH.read_bytes()[:600])
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(folder / "blank.png")
    Image.fromarray(np.concatenate([astronaut(), astronaut()], axis=1)).save(folder / "two.png")
    Image.fromarray(astronaut()).resize((96, 96)).save(folder / "small.png")
    speech = load_audio(speech_path("en_male"))
    write_audio(folder / "silent.wav", np.zeros(16000, np.float32), 16000)
    write_audio(folder / "short.wav", speech[4000:5600], 16000)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 10)
    incomplete = folder / "incomplete_model"
    shutil.copytree(tiny_model, incomplete)
    shutil.rmtree(incomplete / "landmark_predictor")
    broken = folder / "broken_model"
    shutil.copytree(tiny_model, broken)
    index = json.loads((broken / "model_index.json").read_text())
    (broken / "model_index.json").write_text(json.dumps({**index, "audio_encoder": {"_target_": "os.system"}}))
    return folder


BAD_INPUTS = [
    ("ref={bad}/missing.png", "portrait not found"),
    ("ref={bad}/corrupt.jpg", "corrupt.jpg"),
    ("ref={bad}/notes.png", "notes.png"),
    ("ref={bad}/blank.png", "no face found"),
    ("ref={bad}/two.png", "2 faces found"),
    ("ref={bad}/small.png", "face too small"),
    ("ref={speech}", "en_male.wav"),  # an audio file given as the portrait
    ("audio={bad}/missing.wav", "audio file not found"),
    ("audio={bad}/corrupt.wav", "cannot read audio"),
    ("audio={bad}/silent.wav", "is silent"),
    ("audio={bad}/short.wav", "is too short"),
    ("audio={portrait}", "no audio stream"),  # an image given as the audio
    ("edit=Smilling", "unknown attribute 'Smilling'; did you mean 'Smiling'?"),
    ("edit=Eyeglasses alpha=nan", "not a finite number"),
    ("edit=Eyeglasses alpha=3", "out of range"),
    ("edit=[Eyeglasses,Smiling] alpha=[0.8]", "2 edits (Eyeglasses, Smiling) but 1 alphas"),
    ("invert_steps=0", "invert_steps must be a positive whole number"),
    ("edit=Eyeglasses edit_guidance=-1", "edit_guidance must be a number in [0, 10]"),
    ("edit=Eyeglasses edit_guidance=abc", "edit_guidance must be a number"),
    ("edit=Eyeglasses edit_region=maybe", "edit_region must be true or false"),
    ("edit=Eyeglasses edit_guidance_interval=[0.5,0.2]", "edit_guidance_interval must be [lo, hi] with 0 <= lo < hi"),
    ("edit=Eyeglasses edit_reference=maybe", "edit_reference must be true or false"),
    ("edit=Eyeglasses ramp=[0,1] edit_reference=true", "edit_reference animates the edited reference at full strength"),
    ("model={bad}/no_model", "model folder not found"),
    ("model={bad}/incomplete_model", "incomplete FaceEditTalker model folder"),
    ("model={bad}/broken_model", "'os.system'"),
]


@pytest.mark.parametrize("arg, message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_every_bad_input_is_one_line_exit_code_2_and_no_output(monkeypatch, capsys, tiny_model, short_speech,
                                                               bad_files, tmp_path, arg, message):
    output = tmp_path / "out" / "video.mp4"
    output.parent.mkdir()
    args = {"ref": f"ref={ASTRONAUT_PATH}", "audio": f"audio={short_speech}", "model": f"model={tiny_model}"}
    for part in arg.format(bad=bad_files, speech=speech_path("en_male"), portrait=ASTRONAUT_PATH).split():
        args[part.split("=")[0]] = part
    code, err = run_main(monkeypatch, capsys, *args.values(), f"output={output}")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert list(output.parent.iterdir()) == []  # no video, no landmark video, no temporary file


def test_precision_defaults_to_bf16_on_cuda_and_fp32_on_the_cpu():
    from faceedittalker.cli.options import resolve_precision

    assert resolve_precision(None, "cuda") == resolve_precision(None, "cuda:1") == "bf16"
    assert resolve_precision(None, "cpu") == "fp32"
    assert resolve_precision("fp32", "cuda") == "fp32"  # what the user asks for wins
