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
from facelab.cli.common import WaitOpt, open_workspace

err = Console(stderr=True)

ModelOpt = Annotated[str, typer.Option("--model", help="Embedding model (default: dlib).")]
DetectorOpt = Annotated[
    str | None, typer.Option("--detector", help="Face detector for the photos (default: facelab's default).")
]


def _csv_line(*fields: object) -> None:
    csv.writer(sys.stdout, lineterminator="\n").writerow(fields)


@app.command()
def enroll(
    workspace: Annotated[Path, typer.Argument(help="Workspace folder.")],
    photos: Annotated[list[Path], typer.Argument(help="Photos of the person (the largest face of each is used).")],
    person: Annotated[str, typer.Option("--person", "-p", help="The person's name.")],
    model: ModelOpt = "dlib",
    detector: DetectorOpt = None,
    wait: WaitOpt = False,
) -> None:
    """Add a person, or more photos of one, to every embedding-track model of the workspace — no retraining.

    Prints photo,person,enrolled|skipped,note per photo. A photo with no face (or that cannot be
    read) is reported and skipped. Undo with: facelab forget WS --person NAME
    """
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
    workspace: Annotated[Path, typer.Argument(help="Workspace folder.")],
    person: Annotated[str, typer.Option("--person", "-p", help="The person to forget.")],
    wait: WaitOpt = False,
) -> None:
    """Delete everything 'enroll' stored about a person (their face vectors), and say what was removed."""
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
    import numpy as np

    from facelab.embedders import EmbedderUnavailable, embed_largest_face, embedder_info
    from facelab.imageio import ImageError, load_rgb

    try:
        info = embedder_info(model)
    except KeyError as exc:
        err.print(f"[red]{exc.args[0]}[/]")
        raise typer.Exit(2) from exc
    limit = info.verify_distance if threshold is None else threshold
    vectors = []
    for photo in (photo_a, photo_b):
        try:
            _, vector, n_faces = embed_largest_face(load_rgb(photo), model, detector)
        except ImageError as exc:
            err.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from exc
        except EmbedderUnavailable as exc:
            err.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from exc
        if vector is None:
            err.print(f"[red]{photo}: no face found[/] — use a photo where the face is larger and frontal")
            raise typer.Exit(2)
        if n_faces > 1:
            err.print(f"{photo}: {n_faces} faces; comparing the largest")
        vectors.append(vector)
    distance = float(np.linalg.norm(vectors[0] - vectors[1]))
    same = distance <= limit
    _csv_line(photo_a, photo_b, "same" if same else "different", f"{distance:.4f}", f"{limit:.4f}")
    verdict = "same person" if same else "different people"
    sign = "≤" if same else ">"
    err.print(f"{verdict}: distance {distance:.3f} {sign} threshold {limit:.3f} ({model}, euclidean)")
