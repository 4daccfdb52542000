"""Command ``export``: a trained model as a file that runs outside the workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from facelab.cli.app import app

err = Console(stderr=True)
out = Console()


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run folder (WS/runs/NAME), or a workspace (its current model).")],
    fmt: Annotated[
        str, typer.Option("--format", help="onnx (CNN runs: runs with onnxruntime) or bundle (embedding runs).")
    ] = "onnx",
    out_file: Annotated[
        Path | None, typer.Option("--out", help="File to write (default: RUN.onnx or RUN.zip here).")
    ] = None,
) -> None:
    """Export a trained model: CNN runs as ONNX (class names, unknown threshold and the embedding
    gate in its metadata), embedding runs as a small bundle. Use it with: facelab recognize --model FILE PHOTOS."""
    from facelab.export import ExportError, export_run

    if (run / ".facelab" / "facelab.db").is_file():
        from facelab.store import Workspace
        from facelab.workflow import current_run, deployed_model_dir

        with Workspace(run, create=False) as ws:
            current = current_run(ws)
        if current is None:
            err.print(f"[red]{run} has no current model[/]: give a run folder (WS/runs/NAME)")
            raise typer.Exit(2)
        run = deployed_model_dir(current)
    if not (run / "summary.json").is_file():
        err.print(f"[red]{run} is not a run folder[/] (no summary.json); runs live in WS/runs/")
        raise typer.Exit(2)
    name = run.parent.name if run.name == "deployed" else run.name
    target = out_file or Path(f"{name}.{'onnx' if fmt == 'onnx' else 'zip'}")
    try:
        written = export_run(run, fmt, target)
    except ExportError as exc:
        err.print(f"[red]{exc}[/]", highlight=False)
        raise typer.Exit(2) from exc
    err.print(f"exported {name} as {fmt}: {written.stat().st_size / 1e6:.1f} MB", highlight=False)
    err.print(f"next: facelab recognize --model {written} PHOTO_OR_FOLDER", highlight=False, soft_wrap=True)
    out.print(str(written), highlight=False, soft_wrap=True)
