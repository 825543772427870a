"""Command-line entry points that ship with the package (console scripts such as `faceedittalker-train`).

`scripts/<name>.py` in a source checkout are thin wrappers around the same functions, so both run the same code.
"""
