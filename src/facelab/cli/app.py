"""The Typer application object that every command module attaches its commands to."""

from typing import Annotated

import typer

app = typer.Typer(
    name="facelab",
    help=(
        "Build a face data set from folders of your own photos (one folder per person), train a model "
        "that recognizes your people, and use it on photos, folders, video and a webcam.\n\n"
        "Typical use: facelab run PHOTOS --workspace WS  (the whole pipeline), or step by step: "
        "build → review → split → train/auto → use → evaluate → recognize."
    ),
    no_args_is_help=True,
    # `facelab --install-completion` adds tab completion for bash, zsh, fish or PowerShell.
    add_completion=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)


def _print_version(value: bool) -> None:
    if value:
        from facelab import __version__

        typer.echo(f"facelab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print facelab's version and exit."),
    ] = False,
) -> None:
    """Build a face data set from your own photos and recognize your people."""
