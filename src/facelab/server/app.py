"""The FastAPI application of ``facelab serve``: pages, the JSON API, and the checks around both."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from facelab.server.security import Guard, is_loopback
from facelab.server.state import Limits, ServerState
from facelab.server.workspace_ops import OpError

HERE = Path(__file__).parent
API_DESCRIPTION = """\
Build a face data set from your own photos, train a recognizer and use it — the same operations
as the web pages. With a token (required when the server listens beyond localhost), send
`Authorization: Bearer TOKEN` with every request.

Typical flow: `POST /api/people` → `POST /api/people/{name}/photos` (for each person) →
review with `/api/crops…` → `POST /api/jobs` (train) → poll `GET /api/jobs/{id}` →
`POST /api/recognize`.
"""


def create_app(
    workspace: Path,
    token: str | None,
    *,
    host: str = "127.0.0.1",
    limits: Limits | None = None,
    detector: str | None = None,
) -> FastAPI:
    """The web app for ``workspace`` (created if it does not exist).

    ``token``: when set, every request must carry it (``Authorization: Bearer`` or the cookie
    ``/login?token=`` sets); ``None`` only makes sense on a loopback ``host``, which
    :func:`facelab.server.security.check_bind` enforces for ``facelab serve``. ``host`` is the
    address the server listens on: on a loopback address the app answers only requests addressed to
    a loopback name (DNS-rebinding protection). ``limits``: upload limits. ``detector``: face
    detector for uploads (default: the one the workspace was built with, else facelab's default).
    """
    from fastapi_offline import FastAPIOffline

    from facelab import __version__
    from facelab.server import api, api_clusters, api_teach, pages

    state = ServerState(Path(workspace), token, limits or Limits(), detector)
    state.prepare()
    # FastAPIOffline serves Swagger UI from files in its package: the usual CDN is out of reach
    # on an offline machine, and pages here load nothing from elsewhere.
    app = FastAPIOffline(
        title="facelab",
        version=__version__,
        description=API_DESCRIPTION,
        static_url="/docs-static",
        redoc_url=None,
    )
    app.state.facelab = state

    @app.exception_handler(OpError)
    async def op_error(request: Request, exc: OpError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(OverflowError)
    async def overflow_error(request: Request, exc: OverflowError) -> JSONResponse:
        # A number too large for SQLite's 64-bit integers that no parameter check caught.
        return JSONResponse({"detail": f"a number in the request is out of range ({exc})"}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # One readable sentence first (the pages show it), the full list after it.
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        return JSONResponse({"detail": message, "errors": _plain(exc.errors())}, status_code=422)

    app.include_router(api.router)
    app.include_router(api_teach.router)
    app.include_router(api_clusters.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(
        Guard,
        token=token,
        loopback_only=is_loopback(host),
        max_body_bytes=state.limits.max_request_bytes,
    )
    return app


def _plain(errors: object) -> object:
    """Validation errors made JSON-safe (pydantic may put exception objects in ``ctx``)."""
    if isinstance(errors, list | tuple):
        return [_plain(e) for e in errors]
    if isinstance(errors, dict):
        return {k: _plain(v) for k, v in errors.items() if k != "url"}
    if isinstance(errors, str | int | float | bool) or errors is None:
        return errors
    return str(errors)
