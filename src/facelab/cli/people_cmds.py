"""Commands ``people list|rename|merge|delete|restore``: fix people as in a photo manager."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from facelab.cli.app import app
from facelab.cli.common import WaitOpt, WorkspaceFlag, open_workspace, workspace_from

people_app = typer.Typer(
    help="Rename, merge or delete people. Changes survive re-builds; your photo folders are never touched.",
    no_args_is_help=True,
)
app.add_typer(people_app, name="people")
console = Console()
err = Console(stderr=True)


def _args(workspace: Path | None, flag: Path | None, names: list[str] | None, wanted: int, usage: str) -> tuple:
    workspace, rest = workspace_from(workspace, flag, list(names or []))
    if len(rest) != wanted:
        err.print(f"[red]usage:[/] facelab people {usage}", highlight=False)
        raise typer.Exit(2)
    return (workspace, *map(str, rest))


def _run(workspace: Path, wait: bool, change) -> None:
    from facelab.people import PeopleError

    with open_workspace(workspace, write=True, wait=wait) as ws:
        try:
            outcome = change(ws)
        except PeopleError as exc:
            err.print(f"[red]{exc}[/]", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from exc
    console.print(outcome.words(), highlight=False, soft_wrap=True)
    err.print(
        "The current model uses the new names at once; retrain when convenient "
        f"(facelab auto {workspace}) so that it learns from the changed people.",
        highlight=False,
        soft_wrap=True,
    )


Names = Annotated[list[str] | None, typer.Argument(help="The names (see the usage line).", show_default=False)]
WorkspaceArg = Annotated[Path | None, typer.Argument(help="Workspace folder.")]


@people_app.command("list")
def list_people(workspace: WorkspaceArg = None, workspace_flag: WorkspaceFlag = None) -> None:
    """Everyone in the workspace with photo and face counts, and deleted people's folders."""
    from facelab.people import deleted_folders

    workspace, _ = workspace_from(workspace, workspace_flag)
    with open_workspace(workspace) as ws:
        rows = ws.query(
            "SELECT p.person, COUNT(DISTINCT p.id) AS photos, COUNT(c.id) AS faces "
            "FROM photos p LEFT JOIN faces f ON f.photo_id = p.id "
            "LEFT JOIN crops c ON c.face_id = f.id AND c.person = p.person GROUP BY p.person ORDER BY p.person"
        )
        deleted = deleted_folders(ws)
    table = Table(title=f"People in {workspace}")
    for column in ("person", "photos", "faces"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["person"], str(row["photos"]), str(row["faces"]))
    console.print(table)
    if deleted:
        err.print(f"deleted (their folders are skipped by builds): {', '.join(deleted)}", highlight=False)


@people_app.command("rename")
def rename(
    workspace: WorkspaceArg = None, names: Names = None, wait: WaitOpt = False, workspace_flag: WorkspaceFlag = None
) -> None:
    """facelab people rename WS OLD NEW — a new name everywhere, kept by later builds."""
    from facelab.people import rename as rename_person

    workspace, old, new = _args(workspace, workspace_flag, names, 2, "rename WS OLD NEW")
    _run(workspace, wait, lambda ws: rename_person(ws, old, new))


@people_app.command("merge")
def merge(
    workspace: WorkspaceArg = None, names: Names = None, wait: WaitOpt = False, workspace_flag: WorkspaceFlag = None
) -> None:
    """facelab people merge WS FROM INTO — FROM's photos, faces and review decisions become INTO's."""
    from facelab.people import merge as merge_people

    workspace, source, into = _args(workspace, workspace_flag, names, 2, "merge WS FROM INTO")
    _run(workspace, wait, lambda ws: merge_people(ws, source, into))


@people_app.command("delete")
def delete(
    workspace: WorkspaceArg = None, names: Names = None, wait: WaitOpt = False, workspace_flag: WorkspaceFlag = None
) -> None:
    """facelab people delete WS NAME — forget a person (rows, crops, review decisions, enrolled vectors);
    the photos are untouched and later builds skip their folder (undo: facelab people restore WS FOLDER)."""
    from facelab.people import delete as delete_person

    workspace, name = _args(workspace, workspace_flag, names, 1, "delete WS NAME")
    _run(workspace, wait, lambda ws: delete_person(ws, name))


@people_app.command("restore")
def restore(
    workspace: WorkspaceArg = None, names: Names = None, wait: WaitOpt = False, workspace_flag: WorkspaceFlag = None
) -> None:
    """facelab people restore WS FOLDER — let builds read a deleted person's folder again."""
    from facelab.people import PeopleError
    from facelab.people import restore as restore_folder

    workspace, folder = _args(workspace, workspace_flag, names, 1, "restore WS FOLDER")
    with open_workspace(workspace, write=True, wait=wait) as ws:
        try:
            restore_folder(ws, folder)
        except PeopleError as exc:
            err.print(f"[red]{exc}[/]", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from exc
    console.print(f"{folder}: builds read it again; bring the photos back with facelab build PHOTOS -w {workspace}")
