"""Commands of the data stage: detectors, build, review, split."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from facelab.cli.app import app
from facelab.cli.common import (
    SweepMaxOpt,
    SweepStepOpt,
    WaitOpt,
    WorkspaceFlag,
    detector_or_exit,
    open_workspace,
    progress_bars,
    workspace_from,
)

console = Console()
err = Console(stderr=True)

WorkspaceOpt = Annotated[
    Path, typer.Option("--workspace", "-w", help="Workspace folder for the database, crops, data set and runs.")
]


@app.command()
def detectors() -> None:
    """List the face detectors, with what was measured of their speed and quality."""
    from facelab.detect import DEFAULT_DETECTOR, registered

    table = Table(title="Face detectors (use with: facelab build --detector NAME)")
    for column in ("name", "landmarks", "package", "notes"):
        table.add_column(column)
    for name, info in sorted(registered().items()):
        label = f"{name} (default)" if name == DEFAULT_DETECTOR else name
        table.add_row(label, "yes" if info.landmarks else "no", info.package, info.notes)
    console.print(table)


def print_build_summary(result, ws, photos: Path | None = None) -> None:
    table = Table(title="Photos per person")
    table.add_column("person")
    table.add_column("photos", justify="right")
    table.add_column("usable faces", justify="right")
    roles = {
        r["person"]: r["n"]
        for r in ws.query(
            "SELECT c.person, COUNT(*) AS n FROM crops c JOIN faces f ON f.id = c.face_id "
            "WHERE (f.role = 'person' OR c.status = 'accepted') AND c.status != 'rejected' GROUP BY c.person"
        )
    }
    gone = {str(path) for path in result.missing}
    missing = Counter(
        r["person"]
        for r in ws.query("SELECT path, person FROM photos WHERE missing_since IS NOT NULL")
        if r["path"] in gone
    )
    if missing:
        table.add_column("missing", justify="right")
    for person in sorted(set(result.per_person) | set(missing)):
        cells = [person, str(result.per_person.get(person, 0)), str(roles.get(person, 0))]
        table.add_row(*cells, *([str(missing.get(person, 0))] if missing else []))
    console.print(table)
    with_face = result.readable - len(result.no_face)
    share = f"{with_face / result.readable:.0%}" if result.readable else "n/a"
    console.print(
        f"[bold]{result.scanned}[/] photos: {result.processed} processed, {result.unchanged} unchanged, "
        f"{len(result.errors)} unreadable; {with_face} with a face ({share}), {len(result.no_face)} without, "
        f"{len(result.multi_face)} with several faces; {result.faces} faces."
    )
    errors_csv = ws.reports_dir / "errors.csv"
    if result.restored:
        console.print(
            f"{result.restored} photo(s) found again (back where they were, or moved: the same bytes), "
            "with their faces and review decisions."
        )
    if result.missing:
        again = f"facelab build {photos or 'PHOTOS'} --workspace {ws.root} --prune"
        who = ", ".join(f"{person}: {n}" for person, n in sorted(missing.items()))
        console.print(
            f"[yellow]{len(result.missing)} photo(s) missing[/] ({who}) — not found this time, e.g. a folder "
            f"unreadable or a drive not mounted. Kept with their faces, crops and review decisions, and still "
            f"used for training; listed in {errors_csv}. If they are gone for good: {again}",
            highlight=False,
        )
    if result.pruned:
        console.print(f"{result.pruned} missing photo(s) forgotten (--prune): faces, crops and decisions deleted.")
    for loose in result.outside_person_folder:
        err.print(f"[yellow]skipped[/] {loose}: not inside a person folder — move it into PHOTOS/<person>/")
    for link in result.links_skipped:
        err.print(f"[yellow]skipped link[/] {link.path}: {link.reason}", highlight=False)
    if result.skipped:
        kinds = Counter(s.kind.value for s in result.skipped)
        detail = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
        console.print(f"{len(result.skipped)} input(s) skipped ({detail}): see {errors_csv}", highlight=False)
    console.print(f"Crops: {ws.crops_dir}   Reports: {ws.reports_dir}")
    console.print(f"Check which face was taken as each person's: {ws.reports_dir / 'contact'}/<person>.html")


@app.command()
def build(
    photos: Annotated[Path, typer.Argument(help="Folder with one sub-folder of photos per person.")],
    workspace: WorkspaceOpt = Path("workspace"),
    detector: Annotated[
        str | None, typer.Option(help="Face detector (see `facelab detectors`); default: the best measured.")
    ] = None,
    margin: Annotated[
        float | None,
        typer.Option(help="Crop side as a multiple of the face box side (the seed's k); default: measured best."),
    ] = None,
    resolve: Annotated[
        bool, typer.Option(help="Work out which face in each photo is the folder's person (needs dlib).")
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Forget the photos that are missing (not found in PHOTOS): their faces, crops and review decisions.",
        ),
    ] = False,
    sweep_step: SweepStepOpt = None,
    sweep_max: SweepMaxOpt = None,
    wait: WaitOpt = False,
) -> None:
    """Find and crop the faces in PHOTOS/<person>/… into the workspace (originals are never modified).

    Re-running processes only new or changed photos. Unreadable files are reported by name and
    skipped; the command fails only when no photo at all could be read. Photos not found this
    time (a folder unreadable or unmounted, a file moved) are kept as missing, with their faces
    and review decisions, until they come back or --prune forgets them. A PHOTOS folder with no
    photo at all changes nothing.
    """

    detector = detector_or_exit(detector, sweep_step, sweep_max)
    scan = scan_or_exit(photos, workspace)
    with open_workspace(workspace, create=True, write=True, wait=wait) as ws:
        ingested = ingest_or_exit(
            ws,
            photos,
            quiet=quiet,
            detector=detector,
            margin=margin,
            resolve=resolve,
            prune=prune,
            scan=None if wait else scan,  # after a wait the folder may have changed: scan again
        )
        result = ingested.build
        print_build_summary(result, ws, photos)
        if result.readable == 0:
            err.print("[red]None of the photos could be read.[/]")
            raise typer.Exit(1)
        err.print(
            f"next: facelab review {workspace} (check the crops, optional), then facelab split {workspace}",
            highlight=False,
            soft_wrap=True,
        )


def ingest_or_exit(ws, photos: Path, quiet: bool = False, **options: Any):
    """:func:`facelab.workflow.ingest` with progress bars, its folder errors as one line, and its
    notes (unreadable photos, identity resolution) printed."""
    from facelab import workflow

    with progress_bars("Finding faces", "Embedding faces", quiet=quiet) as (advance, embedding):
        ingested = build_or_exit(
            lambda: workflow.ingest(ws, photos, progress=advance, identity_progress=embedding, **options)
        )
    print_ingest_notes(ingested)
    return ingested


def print_ingest_notes(ingested) -> None:
    """Unreadable photos by name, then what identity resolution decided (or why it was skipped)."""
    for issue in ingested.build.errors:
        err.print(f"[red]unreadable[/] {issue.path}: {issue.reason} — {issue.fix}", highlight=False)
    if ingested.identity_note:
        err.print(f"[yellow]{ingested.identity_note}[/]", highlight=False)
    elif ingested.identities is not None:
        console.print(ingested.identities.describe())


def scan_or_exit(photos: Path, workspace: Path):
    """Check the folders and scan the photos before a workspace is created or locked.

    A workspace inside the photo folder (or the reverse) exits 2, a photo folder with no photo at
    all (not mounted, empty, unreadable) exits 1; one line each, and nothing is created.
    """
    from facelab.build import check_roots, scan_photos

    def scan():
        check_roots(photos, workspace)
        return scan_photos(photos)

    return build_or_exit(scan)


def build_or_exit(run: Callable[[], Any]) -> Any:
    """Run a build; the folder errors it can still meet (a drive gone while waiting) exit with one line."""
    from facelab.build import NestedFolders, PhotoRootError

    try:
        return run()
    except NestedFolders as exc:
        err.print(f"[red]refused:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    except PhotoRootError as exc:
        err.print(f"[red]nothing to build:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc


@app.command()
def review(
    workspace: Annotated[Path | None, typer.Argument(help="Workspace folder.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List crops: id, person, status, role, quality.")] = False,
    suspicious: Annotated[
        bool, typer.Option(help="Only crops worth a look (ambiguous, suspicious, low quality), worst first.")
    ] = False,
    person: Annotated[str | None, typer.Option(help="Only this person's crops.")] = None,
    reject: Annotated[list[int] | None, typer.Option(help="Crop ids to leave out of every data set.")] = None,
    accept: Annotated[list[int] | None, typer.Option(help="Crop ids that are the folder's person.")] = None,
    move: Annotated[int | None, typer.Option(help="Crop id to file under another person (with --to).")] = None,
    to: Annotated[str | None, typer.Option(help="Person to move the crop to.")] = None,
    wait: WaitOpt = False,
    workspace_flag: WorkspaceFlag = None,
) -> None:
    """Check the crops by hand (the seed's verification step): list, accept, reject, move.

    Decisions are final: automatic identity resolution never overrides them. Run `facelab split`
    afterwards to refresh the exported data set.
    """
    workspace, _ = workspace_from(workspace, workspace_flag)
    from facelab.review import list_crops, move_crop, set_status
    from facelab.types import CropStatus

    changes = bool(reject or accept or move is not None)
    with open_workspace(workspace, write=changes, wait=wait) as ws:
        try:
            if reject:
                set_status(ws, list(reject), CropStatus.REJECTED)
                console.print(f"rejected {len(reject)} crop(s)")
            if accept:
                set_status(ws, list(accept), CropStatus.ACCEPTED)
                console.print(f"accepted {len(accept)} crop(s)")
            if move is not None:
                if not to:
                    raise typer.BadParameter("--move needs --to PERSON")
                target = move_crop(ws, move, to)
                console.print(f"moved crop {move} to {to} ({target})")
        except (KeyError, ValueError) as exc:
            err.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from exc
        if list_ or suspicious or not (reject or accept or move is not None):
            views = list_crops(ws, person=person, suspicious=suspicious)
            print("id,person,status,role,quality,distance,crop,photo")
            for v in views:
                quality = "" if v.quality is None else f"{v.quality:.3f}"
                distance = "" if v.distance is None else f"{v.distance:.3f}"
                print(f"{v.id},{v.person},{v.status},{v.role or ''},{quality},{distance},{v.path},{v.photo}")


@app.command()
def split(
    workspace: Annotated[Path | None, typer.Argument(help="Workspace folder (after build).")] = None,
    ratios: Annotated[
        tuple[float, float, float], typer.Option(help="Train, val and test fractions of each person's photos.")
    ] = (0.6, 0.2, 0.2),
    seed: Annotated[int, typer.Option(help="Seed of the shuffle: same seed, same split.")] = 0,
    faces: Annotated[
        str, typer.Option(help="resolved: only faces that are the folder's person; all: every face (seed).")
    ] = "resolved",
    wait: WaitOpt = False,
    workspace_flag: WorkspaceFlag = None,
) -> None:
    """Split photos into train/val/test by person, grouping each photo's faces and near-duplicates.

    Exports WS/dataset/{train,val,test}/<person>/*.jpg and WS/dataset/manifest.csv.
    """
    workspace, _ = workspace_from(workspace, workspace_flag)
    from facelab.split import split_workspace

    with open_workspace(workspace, write=True, wait=wait) as ws:
        try:
            result = split_workspace(ws, tuple(ratios), seed=seed, faces=faces)
        except ValueError as exc:
            err.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from exc
        print_split_summary(result)
    err.print(
        f"next: facelab auto {workspace} (train candidates, keep the best), or facelab train {workspace} …",
        highlight=False,
        soft_wrap=True,
    )


def print_split_summary(result) -> None:
    for warning in result.warnings:
        err.print(f"[yellow]warning[/] {warning}")
    table = Table(title="Photos per split")
    for column in ("person", "train", "val", "test"):
        table.add_column(column, justify="right" if column != "person" else "left")
    for person, counts in result.counts.items():
        table.add_row(person, str(counts["train"]), str(counts["val"]), str(counts["test"]))
    console.print(table)
    console.print(
        f"{result.groups_merged} duplicate/near-duplicate photo(s) kept with their twin; "
        f"{result.exported} crops exported; manifest: {result.manifest}"
    )
