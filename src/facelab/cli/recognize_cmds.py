"""Commands that use a trained model: ``recognize`` (photos, folders, video, webcam, streams) and
``album index`` / ``album find`` (search a photo library by who is in it).

Results a script reads go to stdout (CSV with a header, or JSON Lines); messages, warnings and
progress bars go to stderr.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from facelab.cli.app import app
from facelab.cli.common import WaitOpt, WorkspaceFlag, detector_or_exit, open_workspace, progress_bar, workspace_from
from facelab.recognize_video import NamingMode
from facelab.recognize_video import VideoOptions as _Video
from facelab.workflow import DEFAULTS

if TYPE_CHECKING:
    from facelab.recognize import (
        OutputPlanner,
        PhotoResult,
        Recognizer,
        Source,
        Speaker,
        TrackSummary,
        VideoOptions,
        VideoRecognizer,
        Webhook,
    )
    from facelab.recognize_window import LiveDisplay

# soft_wrap: a message stays one line however long (scripts grep stderr too).
err = Console(stderr=True, highlight=False, soft_wrap=True)


class OutputFormat(StrEnum):
    CSV = "csv"
    JSON = "json"


class CsvOutput:
    """CSV on stdout: the header at once (so even an empty answer parses), then one line per row."""

    def __init__(self, columns: tuple[str, ...]) -> None:
        self._writer = csv.DictWriter(sys.stdout, fieldnames=columns, restval="", lineterminator="\n")
        self._writer.writeheader()
        sys.stdout.flush()

    def _write(self, row: dict[str, object]) -> None:
        self._writer.writerow(row)
        sys.stdout.flush()  # a script reading a pipe sees each photo as soon as it is done

    def photo(self, result: PhotoResult, recognizer: Recognizer) -> None:
        from facelab.recognize import photo_rows

        for row in photo_rows(result):
            self._write(row)

    def track(self, summary: TrackSummary) -> None:
        self._write(summary.row())


class JsonOutput:
    """JSON Lines on stdout: one object per photo or per track."""

    def __init__(self, columns: tuple[str, ...]) -> None:
        del columns  # every object names its own fields

    def _write(self, payload: dict[str, object]) -> None:
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def photo(self, result: PhotoResult, recognizer: Recognizer) -> None:
        from facelab.recognize import photo_json

        self._write(photo_json(result, recognizer))

    def track(self, summary: TrackSummary) -> None:
        self._write(summary.to_json())


OUTPUTS: dict[OutputFormat, type[CsvOutput] | type[JsonOutput]] = {
    OutputFormat.CSV: CsvOutput,
    OutputFormat.JSON: JsonOutput,
}

RECOGNIZE_HELP = (
    "Name the people in photos, folders (recursively), video files, a webcam or a stream.\n\n"
    "MODEL is a run folder (WS/runs/NAME) or a workspace (its current model). INPUT is any mix of photos "
    "and folders, or video files (.mp4 .avi .mkv .mov ...), camera:N, or an rtsp:// or http:// stream URL; "
    "--camera N adds webcam N.\n\n"
    "[bold]Photos[/]: one CSV line per face on stdout, after a header line:\n\n"
    "    file,x1,y1,x2,y2,name,score\n\n"
    "The box is in the photo's upright pixels. name is a person, or [bold]unknown[/] when the best score "
    "is under the model's threshold (score is then that best score). A photo with no face gets one line "
    "with an empty box and score and the name [bold]no_face[/]; an unreadable file one with the name "
    "[bold]error[/] (the reason goes to stderr): every photo has at least one line.\n\n"
    "[bold]Video, webcam, stream[/]: faces are tracked; at the end (Ctrl-C, or ESC in the --show window, "
    "ends a live source) one line per appearance of a person:\n\n"
    "    file,track,name,score,agreement,start_s,end_s,frames\n\n"
    "score is the mean model score of the track's winning name, agreement the share of the "
    "face-size-weighted vote it got, start_s and end_s seconds from the start. Arrivals are also printed "
    "on stderr as they happen.\n\n"
    "--format json prints JSON Lines instead: one object per photo (file, status, error, faces with box, "
    "name, score, margin, lookalike, candidates) or per track. Photos and videos cannot be mixed in one "
    "call (their lines have different columns).\n\n"
    "Exit status: 0 every input done, 1 some input could not be read, 2 a usage error."
)


def _fail(message: str) -> typer.Exit:
    from rich.markup import escape

    # Escaped: messages quote commands such as pip install 'facelab[ray]', which Rich would eat as markup.
    err.print(f"[red]{escape(message)}[/]")
    return typer.Exit(2)


@app.command(help=RECOGNIZE_HELP)
def recognize(
    model: Annotated[
        Path | None, typer.Argument(help="Run folder (WS/runs/NAME) or workspace (its current model).")
    ] = None,
    inputs: Annotated[
        list[str] | None, typer.Argument(help="Photos, folders, videos, camera:N or stream URLs.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write annotated copies here (photos as JPEG, videos as MP4). Never the inputs' folder.",
        ),
    ] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="stdout format: csv or json (lines).")] = (
        OutputFormat.CSV
    ),
    camera: Annotated[int | None, typer.Option(help="Webcam index to read (0: the first camera).")] = None,
    show: Annotated[
        bool,
        typer.Option(
            help="Show the annotated video live with fps and names: in a window with OpenCV's GUI build and a "
            "display (ESC quits), otherwise on a local web page whose address is printed (closing it does not "
            "stop recognition; Ctrl-C does)."
        ),
    ] = False,
    show_port: Annotated[
        int | None,
        typer.Option(
            help="--show on a web page at this port (default: a free one; implies the page even with a GUI).",
            min=1,
            max=65535,
        ),
    ] = None,
    show_host: Annotated[
        str | None,
        typer.Option(
            help="--show page's address to listen on (default 127.0.0.1, this machine only); any other "
            "address needs --show-token."
        ),
    ] = None,
    show_token: Annotated[
        str | None,
        typer.Option(
            envvar="FACELAB_TOKEN",
            help="Secret the --show page asks for (?token=TOKEN); required with a non-local --show-host, at least "
            "16 characters. Prefer the FACELAB_TOKEN variable: a command line is visible to other users.",
            show_default=False,
        ),
    ] = None,
    announce: Annotated[bool, typer.Option(help="Speak the names of people as they arrive (needs espeak-ng).")] = False,
    webhook: Annotated[
        str | None, typer.Option(help="POST a JSON event per new person in view to this http(s) URL.")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Unknown below this score (default: the model's calibrated threshold). Higher is stricter."),
    ] = None,
    min_face: Annotated[
        int, typer.Option(help="Ignore faces smaller than this many pixels (shorter side); 0 keeps all.")
    ] = DEFAULTS.min_face,
    detector: Annotated[str | None, typer.Option(help="Face detector (default: facelab's default).")] = None,
    detect_every: Annotated[int, typer.Option(help="Video: detect faces on every k-th frame (higher is faster).")] = 2,
    detect_size: Annotated[
        int, typer.Option(help="Video: longest side the detector sees; raise for small faces.")
    ] = 320,
    reclassify_every: Annotated[
        int,
        typer.Option(help="Video: frames between periodic re-namings of a face (also re-named when it changes)."),
    ] = _Video.reclassify_every,
    naming: Annotated[
        NamingMode,
        typer.Option(
            help="Video: name faces in a worker thread (frames never wait) or inline (the same answers every run); "
            "auto: worker for cameras and streams, inline for files."
        ),
    ] = NamingMode.AUTO,
    duration: Annotated[
        float | None,
        typer.Option(help="Video: stop after this many seconds (of video; wall clock when live)."),
    ] = None,
    model_file: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="An exported model (facelab export: .onnx or .zip bundle) instead of a workspace or run folder.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    workspace_flag: WorkspaceFlag = None,
) -> None:
    if model_file is not None:  # every positional word is an input then
        inputs = [*([str(model)] if model is not None else []), *(inputs or [])]
        model = model_file
    else:
        model, inputs = workspace_from(model, workspace_flag, inputs or [])
    inputs = [str(i) for i in inputs]
    from facelab.recognize import (
        MOVING_KINDS,
        PHOTO_COLUMNS,
        TRACK_COLUMNS,
        InputKind,
        Recognizer,
        Source,
        UnsafeOutput,
        VideoOptions,
        Webhook,
        check_out_dir,
        classify_input,
    )

    sources = [classify_input(text) for text in inputs or []]
    if camera is not None:
        sources.append(Source(InputKind.CAMERA, str(camera)))
    if not sources:
        raise _fail("nothing to recognize: give photos, folders, videos, a stream URL or --camera N")
    moving = [s for s in sources if s.kind in MOVING_KINDS]
    if moving and len(moving) != len(sources):
        raise _fail(
            "photos and videos in one call: their output lines have different columns; "
            "run facelab recognize once for the photos and once for the videos"
        )
    if out is not None:
        try:
            check_out_dir(out, sources)
        except UnsafeOutput as exc:
            raise _fail(str(exc)) from exc
    if (show or announce or webhook) and not moving:
        err.print("[yellow]--show, --announce and --webhook apply to video, webcam and streams; ignored[/]")
    # Settings that cannot work are refused before the model loads, not after a minute of video.
    try:
        poster = Webhook(webhook) if webhook and moving else None
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    try:
        options = VideoOptions(
            detect_every=detect_every,
            detect_size=detect_size,
            min_face=min_face,
            reclassify_every=reclassify_every,
            naming=naming,
        )
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    detector = detector_or_exit(detector)
    window = _open_show(show_host, show_port, show_token) if show and moving else None
    try:
        if model_file is not None:
            from facelab.export import load_exported

            recognizer = Recognizer(
                load_exported(model_file), detector=detector, threshold=threshold, min_face=min_face
            )
        else:
            recognizer = Recognizer.from_path(model, detector=detector, threshold=threshold, min_face=min_face)
    except BaseException as exc:
        if window is not None:  # the live view's server (and its port) must not outlive a failed start
            window.close()
        if isinstance(exc, FileNotFoundError | ValueError | KeyError | RuntimeError):
            raise _fail(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from exc
        raise
    if (warning := recognizer.closed_set_warning()) is not None:
        err.print(f"[yellow]{warning}[/]")
    output = OUTPUTS[fmt](TRACK_COLUMNS if moving else PHOTO_COLUMNS)
    if moving:
        failed = _recognize_videos(recognizer, moving, output, options, out, window, announce, poster, duration, quiet)
    else:
        failed = _recognize_photos(recognizer, sources, output, out, quiet)
    if failed:
        raise typer.Exit(1)


def _open_show(host: str | None, port: int | None, token: str | None) -> LiveDisplay:
    """The --show view: a window with OpenCV's GUI build and a display, else a local web page (its address
    is printed now, while the model loads); a bind that cannot work ends the command with one line."""
    from facelab.recognize_stream import LiveViewError
    from facelab.recognize_window import open_live_display

    try:
        return open_live_display(host, port, token)
    except LiveViewError as exc:
        raise _fail(str(exc)) from exc


def _recognize_photos(
    recognizer: Recognizer,
    sources: list[Source],
    output: CsvOutput | JsonOutput,
    out: Path | None,
    quiet: bool,
) -> int:
    """Photos and folders; returns how many photos could not be read."""
    from facelab.imageio import save_jpeg_atomic
    from facelab.recognize import InputKind, OutputPlanner, annotate_photo, expand_photos

    photos = expand_photos(sources)
    for source in sources:
        if source.kind is InputKind.FOLDER and not any(s is source for _, s in photos):
            err.print(f"[yellow]{source.spec}: no photos found in this folder[/]")
    planner = OutputPlanner(out, sources) if out is not None else None
    failed = 0
    with progress_bar("Photos", quiet) as advance:
        for done, (path, source) in enumerate(photos, start=1):
            result = recognizer.recognize_photo(path, keep_pixels=planner is not None)
            output.photo(result, recognizer)
            if result.error is not None:
                failed += 1
                err.print(f"[red]{path}[/]: {result.error}")
            elif planner is not None and result.rgb is not None:
                save_jpeg_atomic(annotate_photo(result.rgb, result.recognitions), planner.photo(path, source))
            advance(done, len(photos), path)
    if planner is not None:
        err.print(f"annotated copies in {planner.out_dir}")
    if recognizer.skipped_small:
        err.print(
            f"{recognizer.skipped_small} face(s) smaller than {recognizer.min_face:.0f} px were not named "
            "(too small to tell people apart reliably; --min-face 0 names them anyway, with more wrong names)",
            highlight=False,
        )
    return failed


def _recognize_videos(
    recognizer: Recognizer,
    sources: list[Source],
    output: CsvOutput | JsonOutput,
    options: VideoOptions,
    out: Path | None,
    window: LiveDisplay | None,
    announce: bool,
    poster: Webhook | None,
    duration: float | None,
    quiet: bool,
) -> int:
    """Videos, webcams and streams one after the other; returns how many could not be opened."""
    from facelab.recognize import OutputPlanner, Speaker, VideoRecognizer, VideoUnavailable

    speaker = Speaker() if announce else None
    if speaker is not None and not speaker.available:
        err.print(f"[yellow]{Speaker.unavailable_message()}[/]")
    planner = OutputPlanner(out, sources) if out is not None else None
    failed = 0
    try:
        for source in sources:
            video = VideoRecognizer(recognizer, options)
            try:
                stopped = _play(video, source, planner, window, speaker, poster, duration, quiet)
            except VideoUnavailable as exc:
                failed += 1
                err.print(f"[red]{exc}[/]")
                continue
            for summary in video.summary():
                output.track(summary)
            _print_video_report(video, source)
            if stopped:
                break
    finally:
        if window is not None:
            window.close()
        if speaker is not None:
            speaker.close()
        if poster is not None:
            poster.close()
    return failed


def _play(
    video: VideoRecognizer,
    source: Source,
    planner: OutputPlanner | None,
    window: LiveDisplay | None,
    speaker: Speaker | None,
    poster: Webhook | None,
    duration: float | None,
    quiet: bool,
) -> bool:
    """Run one source through the recognizer; True when the user asked to stop (ESC, Ctrl-C)."""
    from facelab.recognize import draw_tracks, open_writer

    writer = None
    written = 0
    stopped = False
    try:
        with progress_bar(source.label, quiet) as advance:
            for frame in video.frames(source):
                for event in frame.events:
                    err.print(f"{source.label} {event.time_s:8.2f} s  track {event.track}: {event.name}")
                    if speaker is not None:
                        speaker.announce(event)
                    if poster is not None:
                        poster.post(event)
                if planner is not None or window is not None:
                    draw_tracks(frame.bgr, frame.tracks)
                if planner is not None:
                    if writer is None:
                        height, width = frame.bgr.shape[:2]
                        writer = open_writer(planner.video(source), video.fps, (width, height))
                    # Repeat a frame for the frames a live source skipped, so the recording plays
                    # in real time; a file's frames are each written once.
                    due = int(frame.time_s * video.fps) + 1
                    for _ in range(max(1, due - written)):
                        writer.write(frame.bgr)
                    written = max(written + 1, due)
                if window is not None and not window.show(frame.bgr, frame.tracks):
                    stopped = True
                    break
                # Live sources have no frame count: the bar then shows frames done and the rate.
                advance(frame.index + 1, video.frame_count or frame.index + 1, f"{video.stats.fps:.1f} fps")
                if duration is not None and frame.time_s >= duration:
                    break
    except KeyboardInterrupt:
        stopped = True  # Ctrl-C ends a live source; the summary still comes
    finally:
        if writer is not None:
            writer.release()
    return stopped


def _print_video_report(video: VideoRecognizer, source: Source) -> None:
    stats = video.stats
    people = ", ".join(f"{s.name} {s.start_s:.1f}–{s.end_s:.1f} s" for s in video.summary()) or "nobody"
    err.print(
        f"{source.label}: {stats.frames} frames at {stats.fps:.1f} fps "
        f"(detection {stats.detect_s:.1f} s over {stats.detections} rounds, naming {stats.classify_s:.1f} s "
        f"for {stats.classified_faces} faces)"
        + (f", {stats.dropped} frames skipped to keep up" if stats.dropped else "")
        + f"; seen: {people}"
    )


# -- albums -------------------------------------------------------------------------------------

album_app = typer.Typer(
    help="Index a photo library, then find photos by who is in them (all of, any of, not).",
    no_args_is_help=True,
)
app.add_typer(album_app, name="album")

if TYPE_CHECKING:
    from facelab.store import Workspace
    from facelab.xmp import SidecarResult


@album_app.command("index")
def album_index(
    library: Annotated[Path, typer.Argument(help="Folder of photos (searched recursively).")],
    workspace: Annotated[
        Path, typer.Option("--workspace", "-w", help="Workspace whose current model names the faces.")
    ],
    model: Annotated[
        Path | None, typer.Option(help="A run folder to use instead of the workspace's current model.")
    ] = None,
    detector: Annotated[str | None, typer.Option(help="Face detector (default: facelab's default).")] = None,
    xmp_dir: Annotated[
        Path | None,
        typer.Option(
            "--xmp-dir",
            help="Also write an XMP sidecar with face regions (MWG) for each photo with a named face, as "
            "DIR/<photo path in LIBRARY>.xmp, for digiKam, Lightroom, exiftool... Never inside LIBRARY.",
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="Who reads the photos: 'local' (this machine, --workers processes) or 'ray' (a Ray cluster at "
            "--address, or a local Ray; needs pip install 'facelab[ray]'). See docs/scale.md.",
        ),
    ] = "local",
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes (local) or Ray actors reading photos at once; default: one per CPU core. "
            "1 reads them in this process.",
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to run on: ray://HEAD:10001 from any machine, HEAD:6379 or auto from one of its "
            "nodes (--engine ray; default: start a local Ray). See docs/scale.md."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    wait: WaitOpt = False,
) -> None:
    """Find and name every face in a photo library; stores boxes, names (and face vectors) in WS.

    Run it again after adding photos: only new or changed photos are read, and photos that left
    the folder are forgotten. After retraining or enrolling people, faces are re-named from their
    stored vectors without reading the photos again. Interrupting is safe: it resumes.
    With --xmp-dir, sidecars are rewritten only where the names or boxes changed.
    """
    from facelab.album_index import index_library
    from facelab.recognize import Recognizer

    if xmp_dir is not None:
        from facelab.xmp import UnsafeSidecarDir, check_sidecar_dir

        try:  # before a model loads and a library is read for nothing
            check_sidecar_dir(xmp_dir, library)
        except UnsafeSidecarDir as exc:
            raise _fail(str(exc)) from exc
    detector = detector_or_exit(detector)
    from facelab.album_engines import get_engine

    try:  # a wrong engine or address fails before a model loads
        get_engine(engine, workers=workers, address=address)
    except (ValueError, ImportError) as exc:
        raise _fail(str(exc)) from exc
    try:
        recognizer = Recognizer.from_path(model or workspace, detector=detector, min_face=DEFAULTS.min_face)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        raise _fail(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from exc
    with open_workspace(workspace, write=True, wait=wait) as ws:
        with progress_bar("Indexing", quiet) as advance:
            try:
                result = index_library(
                    ws, library, recognizer, progress=advance, engine=engine, workers=workers, address=address
                )
            except (FileNotFoundError, ConnectionError) as exc:  # ConnectionError: --address
                raise _fail(str(exc)) from exc
        # Still under the write lock: the names written are the ones just stored.
        sidecars = _write_sidecars(ws, library, xmp_dir) if xmp_dir is not None else None
    for path, reason in result.errors:
        err.print(f"[red]{path}[/]: {reason}")
    err.print(
        f"{result.scanned} photos: {result.indexed} indexed ({result.faces} faces, {result.no_face} without "
        f"a face), {result.renamed} re-named from stored vectors, {result.unchanged} unchanged, "
        f"{len(result.errors)} unreadable, {result.removed} gone from the folder and forgotten."
    )
    if sidecars is not None and xmp_dir is not None:
        _print_sidecars(sidecars, xmp_dir)
    if result.errors or (sidecars is not None and sidecars.errors):
        raise typer.Exit(1)


def _write_sidecars(ws: Workspace, library: Path, xmp_dir: Path) -> SidecarResult:
    """Write the XMP sidecars of ``library``'s photos with named faces (a folder that cannot be used ends the
    command with one line)."""
    from facelab.xmp import UnsafeSidecarDir, write_sidecars

    try:
        sidecars = write_sidecars(ws, library, xmp_dir)
    except UnsafeSidecarDir as exc:
        raise _fail(str(exc)) from exc
    except OSError as exc:
        reason = exc.strerror or exc
        raise _fail(f"--xmp-dir {xmp_dir}: cannot write there ({reason}); give a folder you may write to") from exc
    return sidecars


def _print_sidecars(sidecars: SidecarResult, xmp_dir: Path) -> None:
    for path, reason in sidecars.errors:
        err.print(f"[red]{path}[/]: {reason}")
    if sidecars.kept:
        err.print(
            f"[yellow]{len(sidecars.kept)} sidecar(s) changed by another program (or there before) were left "
            f"alone[/], e.g. {sidecars.kept[0]} — delete them to have facelab write them"
        )
    err.print(
        f"XMP sidecars in {xmp_dir}: {sidecars.photos} photos with named faces — {sidecars.written} written, "
        f"{sidecars.unchanged} unchanged, {sidecars.removed} removed (no named face any more)."
    )


@album_app.command("cluster")
def album_cluster(
    workspace: Annotated[Path | None, typer.Argument(help="Workspace the library was indexed into.")] = None,
    min_cluster_size: Annotated[
        int,
        typer.Option(
            help="Fewest faces that make a group. Raise (5-10) on a large library to list only people seen "
            "often; 2 also finds people seen twice, with more false pairs."
        ),
    ] = 3,
    min_samples: Annotated[
        int | None,
        typer.Option(
            help="How many close neighbours a face needs to be core (default: --min-cluster-size). Higher: "
            "purer groups, more faces left out as noise."
        ),
    ] = None,
    epsilon: Annotated[
        float,
        typer.Option(
            help="Merge groups closer than this distance; try 0.3-0.4 when one person is split over several groups."
        ),
    ] = 0.0,
    metric: Annotated[str, typer.Option(help="Distance between face vectors: euclidean or cosine.")] = "euclidean",
    wait: WaitOpt = False,
    workspace_flag: WorkspaceFlag = None,
) -> None:
    """Group the faces nobody is named in by who they look like; write WS/reports/clusters.csv.

    Takes the faces of the album index (facelab album index) that answered unknown, and groups them
    by density (HDBSCAN over their face vectors): each group is most likely one person; faces in no
    group (seen once, blurred) are noise and left out. The CSV has one line per grouped face,
    cluster,photo,x1,y1,x2,y2, cluster 1 the largest. Name a group with: facelab album name WS CLUSTER NAME.
    Running it again replaces the groups.
    """
    workspace, _ = workspace_from(workspace, workspace_flag)
    from facelab.album_clusters import ClusterError, NoAlbumIndex, cluster_unnamed_faces, write_clusters_csv

    with open_workspace(workspace, write=True, wait=wait) as ws:
        try:
            result = cluster_unnamed_faces(
                ws,
                min_cluster_size=min_cluster_size,
                min_samples=min_samples,
                cluster_selection_epsilon=epsilon,
                metric=metric,
            )
        except NoAlbumIndex as exc:
            raise _fail(str(exc)) from exc
        except ClusterError as exc:
            raise _fail(str(exc)) from exc
        report = write_clusters_csv(ws, result)
    if result.without_vector and not result.faces:
        # Faces named by a CNN (transfer) model carry no face vector: there is nothing to compare.
        err.print(
            f"[red]{result.without_vector} unnamed face(s) but no face vectors stored[/]: index the library with "
            f"an embedding-track model (facelab train {workspace} --track embedding, then facelab album index "
            f"LIBRARY -w {workspace})"
        )
        raise typer.Exit(1)
    skipped = []
    if result.without_vector:
        skipped.append(f"{result.without_vector} without a stored vector")
    if result.other_embedder:
        skipped.append(f"{result.other_embedder} embedded by another model (re-index to include them)")
    note = f" ({'; '.join(skipped)} left out)" if skipped else ""
    if not result.faces:
        err.print(f"nothing to group: every indexed face has a name{note}. Wrote {report} (empty).")
        return
    if result.faces < min_cluster_size:
        err.print(
            f"only {result.faces} unnamed face(s), fewer than --min-cluster-size {min_cluster_size}: no group "
            f"made{note}. Index more photos, or try --min-cluster-size 2. Wrote {report} (empty)."
        )
        return
    sizes = ", ".join(str(len(c)) for c in result.clusters[:10]) + (" ..." if len(result.clusters) > 10 else "")
    err.print(
        f"{len(result.clusters)} cluster(s) of {result.faces} unnamed faces: {result.grouped} faces grouped"
        + (f" (sizes {sizes})" if result.clusters else "")
        + f", {result.noise} noise (in no group){note}. Wrote {report}"
    )
    if result.clusters:
        err.print(f"next: look at the photos of cluster 1 in {report}, then: facelab album name {workspace} 1 NAME")
    else:
        err.print(f"no group found; try a smaller --min-cluster-size (now {min_cluster_size}) or --min-samples 1")


@album_app.command("name")
def album_name(
    workspace: Annotated[Path, typer.Argument(help="Workspace the library was indexed into.")],
    cluster: Annotated[int, typer.Argument(help="Cluster id from WS/reports/clusters.csv (1: the largest).")],
    name: Annotated[str, typer.Argument(help="The person's name; an existing person's name adds to them.")],
    wait: WaitOpt = False,
) -> None:
    """Name a cluster: its faces are enrolled as NAME (no retraining) and named in the album at once.

    The faces' vectors go into the workspace gallery as facelab enroll puts them there (one per
    photo), so the current model knows NAME from now on; facelab album find WS NAME lists the
    photos right away. Naming a cluster again with another name moves it to that name.
    Undo with: facelab forget WS --person NAME.
    """
    from facelab.album_clusters import ClusterError, name_cluster

    with open_workspace(workspace, write=True, wait=wait) as ws:
        try:
            result = name_cluster(ws, cluster, name)
        except ClusterError as exc:
            raise _fail(str(exc)) from exc
    who = "added to the existing person" if result.existing else "a new person"
    moved = f" (was {result.renamed_from})" if result.renamed_from else ""
    err.print(
        f"cluster {result.cluster}: {result.faces} face(s) in {result.photos} photo(s) are now {result.name}{moved} "
        f"— {who}; {result.enrolled} face vector(s) enrolled."
    )
    import shlex

    err.print(f"next: facelab album find {workspace} {shlex.quote(result.name)}")


@album_app.command("find")
def album_find(
    workspace: Annotated[Path | None, typer.Argument(help="Workspace the library was indexed into.")] = None,
    names: Annotated[
        list[str] | None, typer.Argument(help="People to look for ('unknown': unrecognised faces).")
    ] = None,
    any_: Annotated[bool, typer.Option("--any", help="Photos with any of the people, not all of them.")] = False,
    exclude: Annotated[
        list[str] | None, typer.Option("--not", help="Leave out photos showing this person (repeatable).")
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(help="Put the photos in this folder (links, newest first) with an index.html contact sheet."),
    ] = None,
    copy: Annotated[bool, typer.Option(help="With --export: copy the photos instead of linking them.")] = False,
    paths: Annotated[bool, typer.Option("--paths", help="Print only the paths, one per line.")] = False,
    workspace_flag: WorkspaceFlag = None,
) -> None:
    """Photos where all (or --any) of NAMES appear, newest first: CSV file,taken,people on stdout.

    taken is the EXIF date the photo was taken (else the file's modification time), ISO 8601;
    people are the names in the photo joined by ';'. Names compare case-insensitively.
    """
    workspace, names = workspace_from(workspace, workspace_flag, names or [])
    names = [str(n) for n in names]
    if not names:
        raise _fail(f"whom to find? facelab album find {workspace} NAME...")
    from facelab.albums import UnsafeExport, album_listing, export_album, find_photos, known_names, library_roots

    with open_workspace(workspace) as ws:
        known = {n.casefold() for n in known_names(ws)}
        if not known:
            raise _fail(f"{workspace}: no album index yet — run: facelab album index LIBRARY -w {workspace}")
        for name in [*names, *(exclude or [])]:
            if name.casefold() not in known:
                err.print(f"[yellow]nobody called {name!r} in the index[/]; known: {', '.join(known_names(ws))}")
        try:
            # Photo objects only when exporting; the listing is grouped by the database (fast at any size).
            photos = find_photos(ws, names, any_=any_, exclude=exclude or ()) if export is not None else []
            rows = album_listing(ws, names, any_=any_, exclude=exclude or ())
        except ValueError as exc:
            raise _fail(str(exc)) from exc
        libraries = library_roots(ws)
    # Written in one piece: row by row, an unbuffered stdout (PYTHONUNBUFFERED, some IDEs) makes a
    # system call per line — a third of a second for 90,000 photos.
    if paths:
        sys.stdout.write("".join(f"{path}\n" for path, _, _ in rows))
    else:
        listing = io.StringIO()
        writer = csv.writer(listing, lineterminator="\n")
        writer.writerow(["file", "taken", "people"])
        writer.writerows(rows)
        sys.stdout.write(listing.getvalue())
    sys.stdout.flush()
    joiner = " or " if any_ else " and "
    title = joiner.join(names) + (f" but not {', '.join(exclude)}" if exclude else "")
    err.print(f"{len(rows)} photo(s) with {title}")
    if export is not None:
        try:
            page = export_album(photos, export, copy=copy, title=f"facelab: {title}", libraries=libraries)
        except UnsafeExport as exc:
            raise _fail(str(exc)) from exc
        err.print(f"exported to {export} — open {page}")
