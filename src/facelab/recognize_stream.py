"""``recognize --show`` in a browser: the annotated frames as a live MJPEG stream on a local web page.

For machines whose OpenCV cannot open a window (the headless build facelab installs, a server
without a display): :class:`LiveView` serves, from a background thread of the standard library's
``http.server``,

* ``/``            a page with the stream, the processing rate and the names in view;
* ``/stream.mjpg`` the frames as ``multipart/x-mixed-replace`` JPEGs (what an ``<img>`` plays);
* ``/names.json``  ``{"fps", "frames", "names", "faces", "ended"}``, polled by the page.

Recognition never waits for a viewer: :meth:`LiveView.show` only swaps in the newest frame (a
copy) and returns. Each viewer's connection has its own thread that sends the newest frame once
it has sent the previous one, so a slow viewer skips frames and a stalled one blocks only its own
thread (and is dropped after ``send_timeout`` seconds). A frame is JPEG-encoded at most once,
the first time a viewer asks for it, off the recognition thread; with nobody watching nothing is
encoded. Closing the browser tab ends that connection only; :meth:`LiveView.close` (the end of the
video, Ctrl-C) ends every connection and the server.

Security, as ``facelab serve``: it listens on 127.0.0.1 unless told otherwise; any other address
needs a token of at least 16 characters (``?token=TOKEN`` once, then a cookie, or
``Authorization: Bearer TOKEN``), and a loopback server answers only requests addressed to a
loopback name (no DNS rebinding).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import socket
import sys
import threading
import webbrowser
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from facelab.recognize_window import FrameRate, draw_fps
from facelab.server.security import MIN_TOKEN_LENGTH, is_loopback, session_value, token_matches

if TYPE_CHECKING:
    from facelab.tracking import Track

BOUNDARY = "facelabframe"
COOKIE = "facelab_live_session"  # not the web app's cookie: cookies ignore ports, both may run at once
THREAD_PREFIX = "facelab-live"


class LiveViewError(ValueError):
    """The live view cannot listen as asked (non-local address without a token, port taken…);
    the message is one line saying what to change."""


def check_live_bind(host: str, token: str | None) -> None:
    """The rule of :func:`facelab.server.security.check_bind` (``facelab serve``), worded for
    ``recognize --show-host/--show-token``: loopback is free, anything else needs a long token."""
    if token is not None and not token:
        raise LiveViewError("--show-token is empty: give at least 16 random characters, or leave it out")
    if is_loopback(host):
        return
    if not token:
        raise LiveViewError(
            f"--show-host {host} makes the live view reachable from other machines, so a token is required: "
            "add --show-token \"$(python -c 'import secrets; print(secrets.token_urlsafe(24))')\" "
            "(or set FACELAB_TOKEN), then open the printed address with ?token=TOKEN"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise LiveViewError(f"the token is too short: use at least {MIN_TOKEN_LENGTH} random characters")


class LiveView:
    """A local web page showing the annotated frames live, with the rate and the names in view.

    >>> view = LiveView()                      # 127.0.0.1, a free port
    >>> view.announce()                        # prints the address (and opens the browser)
    >>> for frame in video.frames(source):
    ...     draw_tracks(frame.bgr, frame.tracks)
    ...     view.show(frame.bgr, frame.tracks)  # never waits for the browser
    >>> view.close()

    Tuning:

    * ``quality`` (80): JPEG quality of the stream. Lower it (50–70) for a viewer on a slow network
      or to spend less CPU per frame (a 640×480 frame costs ~2–4 ms at 80); raise it (90) for
      detail.
    * ``send_buffer`` (128 KiB): the kernel's send buffer of each stream connection, i.e. how much
      video may wait on the way to a viewer. The system default grows to megabytes (dozens of
      frames: a slow viewer would see seconds of lag); this keeps a couple of frames. Raise it for a
      viewer far away on a fast network (buffer ≥ bandwidth × round-trip time).
    * ``send_timeout`` (10 s): a viewer that takes no data for this long is disconnected, which
      frees its thread; the page reconnects by itself if the tab is still open.
    * ``port`` (0: a free one): give a fixed one to bookmark the page.
    * ``host`` ("127.0.0.1"): this machine only; "0.0.0.0" serves the network and needs ``token``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        *,
        quality: int = 80,
        send_timeout: float = 10.0,
        send_buffer: int = 128 * 1024,
        open_browser: bool = False,
        title: str = "facelab live",
    ) -> None:
        check_live_bind(host, token)
        if not 0 <= port <= 65535:
            raise LiveViewError(f"--show-port {port} is not a TCP port: use 1-65535, or leave it out for a free one")
        self.host = host
        self.token = token or None
        self.quality = int(min(100, max(10, quality)))
        self.send_timeout = send_timeout
        self.send_buffer = send_buffer
        self.title = title
        self.open_browser = open_browser
        self.encoded = 0  # JPEGs made: at most one per shown frame, none while nobody watches
        self.shown = 0
        self._rate = FrameRate()
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._seq = 0
        self._state: dict[str, Any] = {"fps": None, "frames": 0, "names": [], "faces": [], "ended": False}
        self._encode_lock = threading.Lock()
        self._jpeg: tuple[int, bytes] = (0, b"")
        self._closing = False
        self._closed = False
        self._server = _LiveServer(self, host, port)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"{THREAD_PREFIX}-server",
            daemon=True,  # never keeps the process alive after an unexpected error
        )
        self._thread.start()

    # -- addresses ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The page's address (with a placeholder ``TOKEN`` when a token guards it)."""
        wildcard = self.host in ("0.0.0.0", "::")
        where = (
            "THIS-MACHINE"
            if wildcard
            else "127.0.0.1"
            if is_loopback(self.host)
            else f"[{self.host}]"
            if ":" in self.host
            else self.host
        )
        return f"http://{where}:{self.port}/" + ("?token=TOKEN" if self.token else "")

    def announce(self) -> None:
        """Print the page's address on stderr and, if asked (``open_browser``), open it in a browser.

        The browser is opened from a background thread and every failure is ignored: some
        ``webbrowser`` back ends wait for the browser, and none may stop recognition.
        """
        note = " (TOKEN: the token you gave)" if self.token else ""
        print(
            f"live view: {self.url}{note} — closing the page does not stop recognition; Ctrl-C does",
            file=sys.stderr,
            flush=True,
        )
        if self.open_browser and not self.token:
            threading.Thread(
                target=_open_quietly, args=(self.url,), name=f"{THREAD_PREFIX}-browser", daemon=True
            ).start()

    # -- the recognition side -------------------------------------------------------------------

    def show(self, bgr: np.ndarray, tracks: Sequence[Track] = ()) -> bool:
        """Publish a BGR frame (boxes already drawn; the rate is added here) and the tracks in view.

        Returns at once (a copy of the frame and a lock): viewers read the newest frame in their
        own threads. Always True — closing the page does not stop recognition.
        """
        fps = self._rate.tick()
        frame = bgr.copy()  # the caller may reuse its buffer; viewers encode later, in their threads
        draw_fps(frame, fps)
        faces = [
            {"track": t.id, "name": t.name, "score": None if math.isnan(t.score) else round(float(t.score), 4)}
            for t in tracks
        ]
        names = sorted({t.name for t in tracks if t.name is not None})
        with self._cond:
            self._frame = frame
            self._seq += 1
            self.shown += 1
            self._state = {
                "fps": None if fps is None else round(fps, 2),
                "frames": self.shown,
                "names": names,
                "faces": faces,
                "ended": False,
            }
            self._cond.notify_all()
        return True

    def close(self) -> None:
        """Stop serving: end every viewer's stream, join the threads, free the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._cond:
            self._closing = True
            self._state = {**self._state, "ended": True}
            self._cond.notify_all()
        self._server.shutdown()  # returns once serve_forever has stopped accepting
        self._server.drop_clients()  # a stalled viewer's blocked send fails now, not after send_timeout
        self._thread.join(timeout=5.0)
        self._server.join_clients(timeout=5.0)
        self._server.server_close()

    def __enter__(self) -> LiveView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the viewer side (called from the server's threads) ---------------------------------------

    def next_frame(self, after: int) -> tuple[int, np.ndarray] | None:
        """The newest frame once its number is above ``after`` (waits); None once closing."""
        with self._cond:
            while self._seq <= after or self._frame is None:
                if self._closing:
                    return None
                self._cond.wait(timeout=0.5)
            if self._closing:
                return None
            return self._seq, self._frame

    def jpeg(self, seq: int, frame: np.ndarray) -> bytes:
        """Frame ``seq`` as JPEG, encoded once however many viewers ask (or a newer one already made)."""
        import cv2

        with self._encode_lock:
            if self._jpeg[0] >= seq:
                return self._jpeg[1]
            ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:  # cannot happen for a BGR uint8 frame; an empty part would break the stream
                raise RuntimeError("JPEG encoding failed")
            self._jpeg = (seq, data.tobytes())
            self.encoded += 1
            return self._jpeg[1]

    def state(self) -> dict[str, Any]:
        with self._cond:
            return dict(self._state)

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def viewers(self) -> int:
        """Open connections (streams, page loads and polls in progress)."""
        return self._server.connections


def _open_quietly(url: str) -> None:
    # No browser, a broken back end…: the address is printed anyway.
    with contextlib.suppress(Exception):
        webbrowser.open(url, new=2)


class _LiveServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its viewers' sockets and threads, so that closing it
    ends them all (a stalled viewer would otherwise sit in a blocked send)."""

    daemon_threads = True

    def __init__(self, view: LiveView, host: str, port: int) -> None:
        self.view = view
        self._clients: dict[socket.socket, threading.Thread] = {}
        self._clients_lock = threading.Lock()
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            super().__init__((host, port), _Handler)
        except socket.gaierror as exc:
            raise LiveViewError(f"--show-host {host}: not an address or name this machine knows") from exc
        except OSError as exc:
            raise LiveViewError(_bind_error(host, port, exc)) from exc

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_client, args=(request, client_address), name=f"{THREAD_PREFIX}-client", daemon=True
        )
        with self._clients_lock:
            self._clients[request] = thread
        thread.start()

    def _serve_client(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._clients_lock:
                self._clients.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A viewer that goes away mid-frame is normal (a closed tab), not worth a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # ConnectionResetError, BrokenPipeError, TimeoutError…
            return
        super().handle_error(request, client_address)

    @property
    def connections(self) -> int:
        with self._clients_lock:
            return len(self._clients)

    def drop_clients(self) -> None:
        with self._clients_lock:
            sockets = list(self._clients)
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by its thread
                sock.shutdown(socket.SHUT_RDWR)

    def join_clients(self, timeout: float) -> None:
        with self._clients_lock:
            threads = list(self._clients.values())
        for thread in threads:
            thread.join(timeout=timeout / max(1, len(threads)))


def _bind_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"--show-port {port} is in use on {host}: pick another port, or leave --show-port out for a free one"
    if exc.errno == errno.EACCES:
        return f"--show-port {port} needs administrator rights: use a port above 1023"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"--show-host {host} is not an address of this machine: use 127.0.0.1 (or 0.0.0.0 with a token)"
    return f"the live view cannot listen on {host}:{port} ({exc.strerror or exc})"


class _Handler(BaseHTTPRequestHandler):
    server: _LiveServer
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive threads
    server_version = "facelab-live"
    sys_version = ""

    def setup(self) -> None:
        # Bounds every send and the wait for the request line: a viewer that takes nothing for
        # this long is dropped, so its thread ends without close() (the page reconnects if open).
        self.timeout = self.server.view.send_timeout
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log on the recognize command's stderr

    def do_GET(self) -> None:
        view = self.server.view
        url = urlsplit(self.path)
        if not self._addressed_here():
            self._plain(HTTPStatus.FORBIDDEN, "this live view answers only requests to 127.0.0.1 or localhost")
            return
        given = parse_qs(url.query).get("token", [None])[0]
        if not self._authorized(given):
            self._plain(HTTPStatus.UNAUTHORIZED, "open this address with ?token=TOKEN (the token given to recognize)")
            return
        routes = {"/": self._page, "/index.html": self._page, "/stream.mjpg": self._stream, "/names.json": self._names}
        route = routes.get(url.path)
        if route is None:
            self._plain(HTTPStatus.NOT_FOUND, "not found: the live view is at /")
            return
        cookie = session_value(view.token) if view.token and given else None
        route(cookie)

    # -- checks ---------------------------------------------------------------------------------

    def _addressed_here(self) -> bool:
        """A loopback server answers only a loopback Host (DNS rebinding), as the web app does."""
        if not is_loopback(self.server.view.host):
            return True
        host = self.headers.get("Host")
        if host is None:
            return True  # HTTP/1.0 clients may omit it; no browser does
        name = urlsplit(f"//{host}").hostname or ""
        return is_loopback(name)

    def _authorized(self, given: str | None) -> bool:
        token = self.server.view.token
        if token is None:
            return True
        if token_matches(given, token):
            return True
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and token_matches(auth[7:].strip(), token):
            return True
        cookies = [c.strip().split("=", 1) for c in self.headers.get("Cookie", "").split(";") if "=" in c]
        return any(k == COOKIE and token_matches(v, session_value(token)) for k, v in cookies)

    # -- answers --------------------------------------------------------------------------------

    def _headers(self, content_type: str, cookie: str | None, length: int | None = None) -> None:
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if cookie is not None:
            self.send_header("Set-Cookie", f"{COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _plain(self, status: HTTPStatus, text: str) -> None:
        body = (text + "\n").encode()
        self.send_response(status)
        self._headers("text/plain; charset=utf-8", None, len(body))
        self.wfile.write(body)

    def _page(self, cookie: str | None) -> None:
        body = _PAGE.replace("__TITLE__", _html_escape(self.server.view.title)).encode()
        self.send_response(HTTPStatus.OK)
        self.send_header(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self'",
        )
        self._headers("text/html; charset=utf-8", cookie, len(body))
        self.wfile.write(body)

    def _names(self, cookie: str | None) -> None:
        body = json.dumps(self.server.view.state(), ensure_ascii=False).encode()
        self.send_response(HTTPStatus.OK)
        self._headers("application/json", cookie, len(body))
        self.wfile.write(body)

    def _stream(self, cookie: str | None) -> None:
        view = self.server.view
        # Frames waiting in the kernel are frames of lag: keep the buffer to a couple of them, so a slow
        # viewer's send blocks (and it skips to the newest frame) instead of queueing seconds of video.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, view.send_buffer)
        self.send_response(HTTPStatus.OK)
        self.send_header("Connection", "close")
        self._headers(f"multipart/x-mixed-replace; boundary={BOUNDARY}", cookie)
        self.wfile.flush()
        sent = 0
        while (newest := view.next_frame(sent)) is not None:
            sent, frame = newest
            data = view.jpeg(sent, frame)
            head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            # One write per part: blocks only this viewer's thread when its socket is full.
            self.wfile.write(head + data + b"\r\n")
            self.wfile.flush()
        with contextlib.suppress(OSError):  # the stream ended: the video is over
            self.wfile.write(f"--{BOUNDARY}--\r\n".encode())


def _html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


# The page: the stream, and a line with the rate and the names polled from /names.json. Names go in
# as text (textContent), never as HTML. When the stream breaks (server restarted, network), the
# image is reloaded after a second; once the video has ended it stays on the last frame.
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{margin:0;background:#111;color:#eee;font:15px system-ui,sans-serif}
 header{padding:8px 12px;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}
 h1{font-size:16px;margin:0} #fps{color:#ff0}
 #names span{background:#286;padding:2px 8px;border-radius:9px;margin-right:6px}
 #names span.unknown{background:#a33} #status{color:#999}
 img{display:block;max-width:100vw;max-height:calc(100vh - 44px);margin:0 auto}
</style></head><body>
<header><h1>__TITLE__</h1><span id="fps">… fps</span><span id="names"></span>
<span id="status">waiting for frames</span></header>
<img id="stream" src="stream.mjpg" alt="live video">
<script>
const img = document.getElementById("stream"), names = document.getElementById("names");
const fps = document.getElementById("fps"), status = document.getElementById("status");
let ended = false;
img.onerror = () => { if (!ended) setTimeout(() => { img.src = "stream.mjpg?" + Date.now(); }, 1000); };
async function poll() {
  try {
    const state = await (await fetch("names.json", {cache: "no-store"})).json();
    fps.textContent = state.fps === null ? "… fps" : state.fps.toFixed(1) + " fps";
    names.replaceChildren(...state.names.map(n => {
      const s = document.createElement("span"); s.textContent = n;
      if (n === "unknown") s.className = "unknown"; return s; }));
    const pending = state.faces.filter(f => f.name === null).length;
    status.textContent = (state.ended ? "ended — " : "") + state.faces.length + " face(s) in view"
      + (pending ? ", " + pending + " not named yet" : "") + ", frame " + state.frames;
    ended = state.ended;
  } catch (e) { status.textContent = "recognition has stopped"; ended = true; }
  if (!ended) setTimeout(poll, 500);
}
poll();
</script></body></html>
"""
