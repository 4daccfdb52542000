"""Commands over face embeddings: enroll and forget people without retraining, verify two photos.

Output that a script may read goes to stdout as CSV lines; explanations go to stderr.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from facelab.cli.app import app
from facelab.cli.common import WaitOpt, WorkspaceFlag, open_workspace, workspace_from

err = Console(stderr=True)

ModelOpt = Annotated[str, typer.Option("--model", help="Embedding model (default: dlib).")]
DetectorOpt = Annotated[
    str | None, typer.Option("--detector", help="Face detector for the photos (default: facelab's default).")
]


def _csv_line(*fields: object) -> None:
    csv.writer(sys.stdout, lineterminator="\n").writerow(fields)


@app.command()
def enroll(
    person: Annotated[str, typer.Option("--person", "-p", help="The person's name.")],
    workspace: Annotated[Path | None, typer.Argument(help="Workspace folder.")] = None,
    photos: Annotated[
        list[Path] | None, typer.Argument(help="Photos of the person (the largest face of each is used).")
    ] = None,
    model: ModelOpt = "dlib",
    detector: DetectorOpt = None,
    wait: WaitOpt = False,
    workspace_flag: WorkspaceFlag = None,
) -> None:
    """Add a person, or more photos of one, to every embedding-track model of the workspace — no retraining.

    Prints photo,person,enrolled|skipped,note per photo. A photo with no face (or that cannot be
    read) is reported and skipped. Undo with: facelab forget WS --person NAME
    """
    workspace, photos = workspace_from(workspace, workspace_flag, photos or [])
    photos = [Path(p) for p in photos]
    if not photos:
        err.print(f"[red]no photos given[/]: facelab enroll {workspace} PHOTO... --person NAME")
        raise typer.Exit(2)
    from facelab.embed_track import enroll as enroll_photos
    from facelab.embedders import EmbedderUnavailable

    with open_workspace(workspace, write=True, wait=wait) as ws:
        try:
            outcomes = enroll_photos(ws, person, photos, model=model, detector=detector)
        except (EmbedderUnavailable, ValueError) as exc:
            err.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from exc
        total = ws.query("SELECT COUNT(*) AS n FROM gallery WHERE person = ? AND model = ?", (person.strip(), model))[
            0
        ]["n"]
    for outcome in outcomes:
        _csv_line(outcome.photo, person, "enrolled" if outcome.ok else "skipped", outcome.message)
        if not outcome.ok:
            err.print(f"[yellow]{outcome.photo}[/]: {outcome.message}")
    added = sum(o.ok for o in outcomes)
    err.print(f"{person}: {added} of {len(outcomes)} photo(s) enrolled; {total} enrolled face(s) in all.")
    if not added:
        raise typer.Exit(1)


@app.command()
def forget(
    person: Annotated[str, typer.Option("--person", "-p", help="The person to forget.")],
    workspace: Annotated[Path | None, typer.Argument(help="Workspace folder.")] = None,
    wait: WaitOpt = False,
    workspace_flag: WorkspaceFlag = None,
) -> None:
    """Delete everything 'enroll' stored about a person (their face vectors), and say what was removed."""
    workspace, _ = workspace_from(workspace, workspace_flag)
    from facelab.embed_track import forget as forget_person

    with open_workspace(workspace, write=True, wait=wait) as ws:
        result = forget_person(ws, person)
        enrolled = [r["person"] for r in ws.query("SELECT DISTINCT person FROM gallery ORDER BY person")]
    for source in result.sources:
        _csv_line(source, person, "forgotten")
    err.print(f"{person}: removed {result.removed} enrolled face vector(s).")
    if not result.removed:
        others = ", ".join(enrolled) if enrolled else "nobody"
        err.print(f"Nobody called {person!r} was enrolled (names are case-sensitive); enrolled: {others}.")
    if result.runs_trained_on_person:
        names = ", ".join(p.name for p in result.runs_trained_on_person)
        err.print(
            f"[yellow]Still known to trained runs[/] ({names}): they learned {person} from the photo "
            f"folder. To forget {person} there too, remove their folder, rebuild and train again "
            "(or delete those runs)."
        )


@app.command()
def verify(
    photo_a: Annotated[Path, typer.Argument(help="First photo.")],
    photo_b: Annotated[Path, typer.Argument(help="Second photo.")],
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Largest distance still called the same person (default: calibrated, see "
            "docs/benchmarks_embedding.md). Lower is stricter."
        ),
    ] = None,
    model: ModelOpt = "dlib",
    detector: DetectorOpt = None,
) -> None:
    """Are the largest faces of two photos the same person? Prints: a,b,same|different,distance,threshold."""
    from facelab.api import NoFace
    from facelab.api import verify as verify_faces
    from facelab.embedders import EmbedderUnavailable
    from facelab.imageio import ImageError

    try:
        check = verify_faces(photo_a, photo_b, threshold=threshold, model=model, detector=detector)
    except KeyError as exc:
        err.print(f"[red]{exc.args[0]}[/]")
        raise typer.Exit(2) from exc
    except (ImageError, EmbedderUnavailable, NoFace) as exc:
        err.print(f"[red]{exc}[/]", highlight=False)
        raise typer.Exit(2) from exc
    for photo, n_faces in zip((photo_a, photo_b), check.faces_in_image, strict=True):
        if n_faces > 1:
            err.print(f"{photo}: {n_faces} faces; comparing the largest")
    _csv_line(
        photo_a, photo_b, "same" if check.same else "different", f"{check.distance:.4f}", f"{check.threshold:.4f}"
    )
    verdict = "same person" if check.same else "different people"
    sign = "≤" if check.same else ">"
    err.print(f"{verdict}: distance {check.distance:.3f} {sign} threshold {check.threshold:.3f} ({model}, euclidean)")
