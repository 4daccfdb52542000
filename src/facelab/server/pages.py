"""Server-rendered pages: People, Albums, Review, Train (+ run results), Recognize, and the login page.

Pages are rendered from the same functions the API calls; a little JavaScript per page
(``static/*.js``) calls the API for uploads, review actions, job progress and recognition.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from facelab.server import workspace_ops as ops
from facelab.server.api import run_dir_of, run_listing, training_options, unfinished_runs
from facelab.server.people_ops import delete_preview
from facelab.server.security import COOKIE_NAME, MAX_DB_ID, session_value, token_matches
from facelab.server.state import ServerState

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters["urlpart"] = lambda value: quote(str(value), safe="")


def _pct(value: object) -> str:
    if value is None or not isinstance(value, int | float) or value != value:
        return "–"
    return f"{value:.1%}"


def _num(value: object, digits: int = 3) -> str:
    if value is None or not isinstance(value, int | float) or value != value:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


templates.env.filters["pct"] = _pct
templates.env.filters["num"] = _num


def _state(request: Request) -> ServerState:
    return request.app.state.facelab


def _render(request: Request, name: str, page: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    state = _state(request)
    with state.workspace() as ws:
        current = ws.setting("current_model")
    job = state.jobs.active()
    return templates.TemplateResponse(
        request,
        name,
        {
            "page": page,
            "workspace_name": state.root.name,
            "current_model": current,
            "active_job": job.id if job else None,
            "limits": state.limits,
            "auth": state.token is not None,
            **context,
        },
        status_code=status_code,
    )


def _json_block(data: object) -> str:
    """Data for a page's script, as text for a ``<script type="application/json">`` block.

    ``<`` is escaped so no value can close the block; Jinja's autoescaping does the rest. NaN and
    infinity (not JSON: the browser's parser rejects the whole block) become null.
    """
    return json.dumps(_finite(data)).replace("<", "\\u003c")


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/people", status_code=303)


@router.get("/favicon.ico")
def favicon() -> Response:
    return Response(status_code=204)


@router.get("/login")
def login(request: Request, token: str | None = None, next: str = "/") -> Response:
    """``/login?token=TOKEN`` sets the session cookie and goes on to ``next`` (a local path only)."""
    state = _state(request)
    target = next if next.startswith("/") and not next.startswith("//") and "\\" not in next else "/"
    if state.token is None:
        return RedirectResponse(target, status_code=303)
    if token is not None and token_matches(token, state.token):
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            session_value(state.token),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            max_age=30 * 24 * 3600,
        )
        return response
    error = "That token is not right." if token is not None else None
    return templates.TemplateResponse(
        request,
        "login.html",
        {"page": "login", "next": target, "error": error, "workspace_name": state.root.name},
        status_code=401 if token is not None else 200,
    )


@router.get("/people")
def people_page(request: Request) -> HTMLResponse:
    with _state(request).workspace() as ws:
        people = ops.people_summary(ws)
    return _render(request, "people.html", "people", people=people)


@router.get("/people/{name}")
def person_page(request: Request, name: str) -> HTMLResponse:
    try:
        with _state(request).workspace() as ws:
            name = ops.require_person(ws, name)
            summary = ops.person_summary(ws, name)
            photos = ops.person_photos(ws, name)
            others = [n for n in ops.person_names(ws) if n != name]
            preview = delete_preview(ws, name)
    except ops.OpError as exc:
        return _error(request, exc)
    return _render(
        request,
        "person.html",
        "people",
        person=summary,
        photos=photos,
        others=others,
        delete_preview=preview,
        page_data=_json_block({"person": name, "others": others, "delete_preview": preview}),
    )


@router.get("/albums")
def albums_page(
    request: Request,
    name: Annotated[list[str], Query()] = [],  # noqa: B006  (FastAPI copies query defaults)
    exclude: Annotated[list[str], Query()] = [],  # noqa: B006
    match: str = "all",
) -> HTMLResponse:
    """Search the album index by people: all of / any of the chosen names, none of the excluded."""
    from facelab.server import album_ops
    from facelab.server.roots import album_roots

    any_ = match == "any"
    wanted = [n for n in name if n.strip()]
    unwanted = [n for n in exclude if n.strip()]
    state = _state(request)
    with state.workspace() as ws:
        ready = album_ops.index_ready(ws)
        names = album_ops.names(ws)
        covers = ops.cover_crops(ws)
        libraries = [str(p) for p in album_roots(ws)]
        indexed = ws.query("SELECT COUNT(*) AS n FROM album_photos")[0]["n"] if ready else 0
        photos, total = album_ops.search(ws, wanted, any_=any_, exclude=unwanted) if wanted else ([], 0)
    query = urlencode([("name", n) for n in wanted] + [("exclude", n) for n in unwanted] + [("any", str(any_).lower())])
    return _render(
        request,
        "albums.html",
        "albums",
        ready=ready,
        names=names,
        covers=covers,
        wanted=wanted,
        unwanted=unwanted,
        any_=any_,
        searched=bool(wanted),
        photos=photos,
        total=total,
        indexed=indexed,
        libraries=libraries,
        workspace_path=str(state.root),
        export_query=query,
    )


@router.get("/albums/unnamed")
def unnamed_faces_page(request: Request) -> HTMLResponse:
    """Unnamed faces: the groups of the album's faces nobody is named in, largest first, to name."""
    from facelab.server import cluster_ops

    state = _state(request)
    with state.workspace() as ws:
        data = cluster_ops.listing(ws)
        people = cluster_ops.known_people(ws) if data["ready"] else []
    return _render(
        request,
        "albums_unnamed.html",
        "albums",
        data=data,
        people=people,
        workspace_path=str(state.root),
    )


@router.get("/review")
def review_page(request: Request, person: str | None = None, show: str = "all", page: str = "1") -> HTMLResponse:
    """The review queue: every face, the most doubtful first across everyone, by filter and page."""
    from facelab.server import review_ops

    try:
        try:
            chosen = review_ops.Show(show)
        except ValueError:
            choices = ", ".join(s.value for s in review_ops.Show)
            raise ops.OpError(f"show={show[:40]!r} is not a review filter; use one of: {choices}", 422) from None
        number = int(page) if page.isascii() and page.isdigit() and len(page) < 7 else 1
        with _state(request).workspace() as ws:
            if person:
                person = ops.require_person(ws, person)
            queue = review_ops.queue(ws, chosen, person or None, number)
            names = ops.person_names(ws)
    except ops.OpError as exc:
        return _error(request, exc)
    return _render(
        request,
        "review.html",
        "review",
        queue=queue,
        filters=[s.value for s in review_ops.Show],
        states=review_ops.STATES_EXPLAINED,
        people=names,
        person=person,
        page_data=_json_block({"people": names, "show": queue["show"], "person": person, "page": queue["page"]}),
    )


@router.get("/photos/{photo_id}")
def photo_page(request: Request, photo_id: str) -> HTMLResponse:
    try:
        number = int(photo_id) if photo_id.isascii() and photo_id.isdigit() else -1
        if not 1 <= number <= MAX_DB_ID:
            raise ops.NotFound(f"no photo with id {photo_id[:40]!r}")
        with _state(request).workspace() as ws:
            photo = ops.photo_detail(ws, number)
    except ops.OpError as exc:
        return _error(request, exc)
    return _render(request, "photo.html", "people", photo=photo, page_data=_json_block(photo))


@router.get("/train")
def train_page(request: Request) -> HTMLResponse:
    state = _state(request)
    with state.workspace() as ws:
        runs = run_listing(ws)
        unfinished = unfinished_runs(ws)
        people = ops.people_summary(ws)
    jobs = [job.to_json() for job in state.jobs.list()[:5]]
    options = training_options()
    return _render(
        request,
        "train.html",
        "train",
        runs=runs,
        unfinished=unfinished,
        people=people,
        jobs=jobs,
        options=options,
        page_data=_json_block({"job": jobs[0] if jobs else None}),
    )


@router.get("/runs/{name}")
def run_page(request: Request, name: str) -> HTMLResponse:
    try:
        with _state(request).workspace() as ws:
            folder = run_dir_of(ws, name)
            runs = run_listing(ws)
    except ops.OpError as exc:
        return _error(request, exc)
    run = next(r for r in runs if r["run"] == folder.name)
    summary = json.loads((folder / "summary.json").read_text())
    metrics = _read_json(folder / "metrics.json")
    openset = _read_json(folder / "openset.json")
    return _render(
        request,
        "run.html",
        "train",
        run=run,
        runs=runs,
        summary=summary,
        metrics=metrics,
        openset=openset,
    )


@router.get("/recognize")
def recognize_page(request: Request) -> HTMLResponse:
    with _state(request).workspace() as ws:
        names = ops.person_names(ws)
    return _render(request, "recognize.html", "recognize", page_data=_json_block({"people": names}))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _error(request: Request, exc: ops.OpError) -> HTMLResponse:
    return _render(request, "error.html", "", status_code=exc.status, message=str(exc))
