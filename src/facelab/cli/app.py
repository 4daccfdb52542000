"""The Typer application object that every command module attaches its commands to."""

import typer

app = typer.Typer(
    name="facelab",
    help=(
        "Build a face data set from folders of your own photos (one folder per person), train a model "
        "that recognizes your people, and use it on photos, folders, video and a webcam.\n\n"
        "Typical use: facelab run PHOTOS --workspace WS  (the whole pipeline), or step by step: "
        "build → review → split → train/auto → evaluate → recognize."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)
