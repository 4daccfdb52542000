"""Command line: thin Typer commands over the library functions.

Each module in ``COMMAND_MODULES`` attaches its commands to :data:`facelab.cli.app.app`; heavy
libraries (torch, dlib) are imported inside the commands so ``facelab --help`` stays instant.
"""

from __future__ import annotations

import importlib

from facelab.cli.app import app

COMMAND_MODULES = (
    "facelab.cli.data_cmds",
    "facelab.cli.eval_cmds",
    "facelab.cli.train_cmds",
    "facelab.cli.embed_cmds",
    "facelab.cli.recognize_cmds",
    "facelab.cli.serve_cmds",
    "facelab.cli.people_cmds",
    "facelab.cli.export_cmds",
)


def main() -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    app()


__all__ = ["app", "main"]
