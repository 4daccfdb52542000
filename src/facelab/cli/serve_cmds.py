"""Command ``serve``: the web app and REST API (FastAPI + uvicorn), imported only when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from facelab.cli.app import app
from facelab.cli.common import WorkspaceFlag, workspace_from

err = Console(stderr=True)


@app.command()
def serve(
    workspace: Annotated[Path | None, typer.Argument(help="Workspace folder (created if it does not exist).")] = None,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. The default answers this machine only; any other address "
            "(e.g. 0.0.0.0 for the whole network) needs --token."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="FACELAB_TOKEN",
            help="Secret every request must carry (Authorization: Bearer TOKEN, or open "
            "/login?token=TOKEN once in the browser). Required with a non-local --host; at least 16 "
            "characters. Prefer the FACELAB_TOKEN variable: a command line is visible to other users.",
            show_default=False,
        ),
    ] = None,
    strangers: Annotated[
        Path | None,
        typer.Option(
            help="Folder of photos of people NOT among yours, to calibrate 'unknown' when training from the "
            "web page (remembered in the workspace; `facelab run/auto --strangers` set it too).",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    max_recognitions: Annotated[
        int | None,
        typer.Option(min=1, help="Recognitions running at once; more get 429 (default: the number of CPU cores)."),
    ] = None,
    max_request_megapixels: Annotated[
        float,
        typer.Option(min=0.1, help="Pixels the images of one recognition request may hold; more get 413."),
    ] = 50.0,
    workspace_flag: WorkspaceFlag = None,
) -> None:
    """Web app: People (upload photos), Review (check faces), Train (with live progress), Recognize
    (a photo or the webcam), plus the REST API documented at /docs.

    Example: facelab serve WS, then open http://127.0.0.1:8000
    """
    workspace, _ = workspace_from(workspace, workspace_flag)
    from facelab.server.security import InsecureBind, check_bind, is_loopback

    try:
        check_bind(host, token)
    except InsecureBind as exc:
        err.print(f"[red]Refusing to start:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    if workspace.exists() and not workspace.is_dir():
        err.print(f"[red]{workspace} is a file[/]: give a workspace folder")
        raise typer.Exit(2)

    import uvicorn

    from facelab.server.app import create_app
    from facelab.server.state import Limits

    bounds = {"max_request_pixels": int(max_request_megapixels * 1e6)}
    if max_recognitions is not None:
        bounds["max_recognitions"] = max_recognitions
    application = create_app(workspace, token, host=host, limits=Limits(**bounds))
    if strangers is not None:
        from facelab.auto import strangers_folder
        from facelab.store import Workspace

        with Workspace(workspace) as ws:
            strangers_folder(ws, strangers)
        err.print(f"training from the web page calibrates 'unknown' with {strangers.resolve()}")
    # 0.0.0.0 / :: listen on every address of the machine: the user knows which one to type.
    wildcard = host in ("0.0.0.0", "::")
    where = "THIS-MACHINE" if wildcard else "127.0.0.1" if is_loopback(host) else f"[{host}]" if ":" in host else host
    err.print(f"facelab: serving {workspace.resolve()} at http://{where}:{port}  (API docs: /docs)")
    if token:
        err.print(f"log in once with http://{where}:{port}/login?token=TOKEN (the token you gave)")
    uvicorn.run(application, host=host, port=port, log_level="warning")
