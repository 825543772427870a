"""User-facing errors: bad input becomes one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

EXIT_BAD_INPUT = 2

F = TypeVar("F", bound=Callable)


class InputError(ValueError):
    """A problem with what the user gave us (path, file, option). The message is shown as is."""


def exit_on_input_error(fn: F) -> F:
    """Wrap a script entry point: an `InputError` prints `error: <message>` and exits with code 2.

    Hydra prints a traceback for exceptions raised inside a task function, so scripts wrap their task
    function with this decorator underneath `@hydra.main`; `SystemExit` passes through Hydra untouched.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            cause = find_input_error(err)
            if cause is None:
                raise
            print(f"error: {cause}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper  # type: ignore[return-value]


def find_input_error(err: BaseException | None) -> InputError | None:
    """The `InputError` behind `err`, also when a library wrapped it (`raise Wrapper(...) from err`, as Hydra's
    `instantiate` does).

    Only explicit `__cause__` chains are followed: an exception raised *while handling* an `InputError` (its
    `__context__`) is a new failure, such as a crash in an `except` block, and must keep its traceback."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, InputError):
            return err
        seen.add(id(err))
        err = err.__cause__
    return None
