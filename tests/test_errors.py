"""errors.py: bad input is one `error:` line and exit code 2; any other failure keeps its traceback."""

from __future__ import annotations

import sys
import types

import pytest
from hydra.utils import instantiate

from faceedittalker.errors import EXIT_BAD_INPUT, InputError, exit_on_input_error, find_input_error


def _raise_input_error(path: str) -> None:
    raise InputError(f"file not found: {path}")


def test_an_input_error_is_one_line_and_exit_code_2(capsys):
    @exit_on_input_error
    def main() -> None:
        _raise_input_error("x.png")

    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == EXIT_BAD_INPUT
    assert capsys.readouterr().err == "error: file not found: x.png\n"


def test_an_input_error_wrapped_by_hydra_instantiate_is_still_found(capsys, monkeypatch):
    # Hydra's instantiate raises InstantiationException(...) `from` the target's exception.
    module = types.ModuleType("tests_errors_target")
    module.raise_input_error = _raise_input_error
    monkeypatch.setitem(sys.modules, "tests_errors_target", module)

    @exit_on_input_error
    def main() -> None:
        instantiate({"_target_": "tests_errors_target.raise_input_error", "path": "y.png"})

    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip().splitlines() == ["error: file not found: y.png"]


def test_a_crash_while_handling_an_input_error_keeps_its_traceback(capsys):
    # The crash's __context__ is the InputError; reporting it as bad input would hide the bug.
    @exit_on_input_error
    def main() -> float:
        try:
            _raise_input_error("z.png")
        except InputError:
            return 1 / 0  # a bug in the error handler

    with pytest.raises(ZeroDivisionError):
        main()
    assert "error:" not in capsys.readouterr().err


def test_find_input_error_follows_causes_only():
    cause = InputError("bad")
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = cause
    assert find_input_error(wrapped) is cause
    context_only = RuntimeError("new failure")
    context_only.__context__ = cause
    assert find_input_error(context_only) is None
