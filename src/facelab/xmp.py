"""XMP sidecars with face regions, so photo managers (digiKam, Lightroom, Immich, PhotoPrism, exiftool)
show the names facelab found.

A sidecar is a small XML file beside a copy of the library's layout: ``DIR/<photo path relative to
the library>.xmp``, e.g. ``DIR/2021/trip/IMG_1.jpg.xmp``. It holds the Metadata Working Group's
region schema (``mwg-rs``), which those programs read:

    mwg-rs:Regions
      mwg-rs:AppliedToDimensions  stDim:w, stDim:h, stDim:unit="pixel"   (the image the regions apply to)
      mwg-rs:RegionList  rdf:Bag of
        mwg-rs:Name, mwg-rs:Type="Face",
        mwg-rs:Area  stArea:x, stArea:y (the region's CENTRE), stArea:w, stArea:h, stArea:unit="normalized"

Only named faces become regions (a photo without one gets no sidecar). The user's library is never
written: a sidecar folder inside it is refused. Each sidecar is written atomically and only when
its content changes; a sidecar another program changed since facelab wrote it is left alone (and
reported), and sidecars of photos that lost their named faces are removed — only those facelab
wrote, as listed in ``DIR/.facelab-xmp.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facelab.albums import ensure_album_tables
from facelab.store import Workspace
from facelab.types import Box

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "mwg-rs": "http://www.metadataworkinggroup.com/schemas/regions/",
    "stArea": "http://ns.adobe.com/xmp/sType/Area#",
    "stDim": "http://ns.adobe.com/xap/1.0/sType/Dimensions#",
}
SIDECAR_SUFFIX = ".xmp"
MARKER = ".facelab-xmp.json"
TOOLKIT = "facelab"  # x:xmptk; no version or date, so the same faces give the same bytes
# The standard packet wrapper (XMP spec part 1, 7.3): some readers look for it even in sidecars.
_HEADER = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_TRAILER = '\n<?xpacket end="w"?>\n'
# Characters XML 1.0 cannot hold at all, even escaped (a name typed with a stray control key).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _q(prefix: str, local: str) -> str:
    return f"{{{NS[prefix]}}}{local}"


def _number(value: float) -> str:
    return f"{value:.6f}"


@dataclass(frozen=True)
class Region:
    """A named face in a photo, its box in the photo's upright pixels."""

    name: str
    box: Box


def normalized_area(box: Box, width: int, height: int) -> tuple[float, float, float, float] | None:
    """MWG ``stArea`` (x, y, w, h) of ``box``: centre and size as fractions of the image, the box first
    clipped to the image (detectors may place a box partly outside it). None when nothing is left."""
    x1, x2 = min(max(box.x1, 0.0), width), min(max(box.x2, 0.0), width)
    y1, y2 = min(max(box.y1, 0.0), height), min(max(box.y2, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        return None
    return ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)


def regions_xmp(width: int, height: int, regions: Sequence[Region]) -> bytes:
    """A complete XMP sidecar (UTF-8 bytes) with ``regions`` as MWG face regions.

    ``width`` × ``height`` is the image the boxes are in. facelab's boxes are in the photo's
    *upright* pixels (EXIF Orientation applied — the image as a viewer shows it), and
    ``album_photos`` stores that upright size, so AppliedToDimensions is the upright size too and
    a reader that honours it scales the regions onto what it displays.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size {width}x{height}: need a positive width and height")
    for prefix, uri in NS.items():
        ET.register_namespace(prefix, uri)
    root = ET.Element(_q("x", "xmpmeta"), {_q("x", "xmptk"): TOOLKIT})
    rdf = ET.SubElement(root, _q("rdf", "RDF"))
    description = ET.SubElement(rdf, _q("rdf", "Description"), {_q("rdf", "about"): ""})
    info = ET.SubElement(description, _q("mwg-rs", "Regions"), {_q("rdf", "parseType"): "Resource"})
    ET.SubElement(
        info,
        _q("mwg-rs", "AppliedToDimensions"),
        {_q("stDim", "w"): str(int(width)), _q("stDim", "h"): str(int(height)), _q("stDim", "unit"): "pixel"},
    )
    bag = ET.SubElement(ET.SubElement(info, _q("mwg-rs", "RegionList")), _q("rdf", "Bag"))
    for region in regions:
        area = normalized_area(region.box, width, height)
        name = _NOT_XML.sub("", region.name).strip()
        if area is None or not name:
            continue
        # ElementTree escapes &, <, > and quotes in attribute values; the file is UTF-8, so any
        # script (é, 李, emoji) is written as itself.
        item = ET.SubElement(ET.SubElement(bag, _q("rdf", "li")), _q("rdf", "Description"))
        item.set(_q("mwg-rs", "Name"), name)
        item.set(_q("mwg-rs", "Type"), "Face")
        x, y, w, h = area
        ET.SubElement(
            item,
            _q("mwg-rs", "Area"),
            {
                _q("stArea", "x"): _number(x),
                _q("stArea", "y"): _number(y),
                _q("stArea", "w"): _number(w),
                _q("stArea", "h"): _number(h),
                _q("stArea", "unit"): "normalized",
            },
        )
    ET.indent(root, space=" ")
    body = ET.tostring(root, encoding="unicode")
    return (_HEADER + body + _TRAILER).encode("utf-8")


# -- sidecar folders ----------------------------------------------------------------------------


class UnsafeSidecarDir(ValueError):
    """The sidecar folder would write into the user's library."""


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_sidecar_dir(dest: Path, library: Path) -> None:
    """Refuse a sidecar folder inside the library: facelab never writes into the user's photos."""
    target = Path(os.path.abspath(dest)).resolve()
    root = Path(os.path.abspath(library)).resolve()
    if _inside(target, root):
        raise UnsafeSidecarDir(
            f"--xmp-dir {dest} is inside the library {library}; facelab never writes there — "
            "give a folder outside it, e.g. --xmp-dir ~/facelab-xmp"
        )
    if target.exists() and not target.is_dir():
        raise UnsafeSidecarDir(f"--xmp-dir {dest} is a file; give a folder")


def sidecar_path(dest: Path, library: Path, photo: Path | str) -> Path:
    """``dest/<photo relative to library>.xmp``."""
    relative = os.path.relpath(os.path.abspath(photo), os.path.abspath(library))
    return Path(dest) / (relative + SIDECAR_SUFFIX)


@dataclass
class SidecarResult:
    """What :func:`write_sidecars` did."""

    photos: int = 0  # photos of the library with at least one named face
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    kept: list[Path] = field(default_factory=list)  # changed by another program: left alone
    errors: list[tuple[Path, str]] = field(default_factory=list)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_marker(dest: Path) -> dict[str, dict[str, str]]:
    """``{library root: {relative sidecar path: sha256 of what facelab wrote}}``."""
    try:
        data = json.loads((dest / MARKER).read_text(encoding="utf-8"))
        return {str(k): {str(p): str(h) for p, h in v.items()} for k, v in data.get("libraries", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _safe_relative(name: str) -> bool:
    relative = Path(name)
    return not relative.is_absolute() and ".." not in relative.parts


def library_regions(ws: Workspace, library: Path) -> dict[str, tuple[int, int, list[Region]]]:
    """Photos below ``library`` with named faces: path → (upright width, upright height, regions)."""
    ensure_album_tables(ws)
    prefix = os.path.abspath(library).rstrip(os.sep) + os.sep
    rows = ws.query(
        "SELECT p.path, p.width, p.height, f.name, f.x1, f.y1, f.x2, f.y2 FROM album_photos p "
        "JOIN album_faces f ON f.photo_id = p.id WHERE p.status = 'ok' AND f.name IS NOT NULL "
        "AND p.width > 0 AND p.height > 0 ORDER BY p.path, f.idx"
    )
    photos: dict[str, tuple[int, int, list[Region]]] = {}
    for r in rows:
        if not r["path"].startswith(prefix):
            continue  # another library indexed into the same workspace
        entry = photos.setdefault(r["path"], (r["width"], r["height"], []))
        entry[2].append(Region(r["name"], Box(r["x1"], r["y1"], r["x2"], r["y2"])))
    return photos


def write_sidecars(ws: Workspace, library: Path, dest: Path) -> SidecarResult:
    """Write ``dest/<photo>.xmp`` for every photo of ``library`` (as indexed in ``ws``) with a named face.

    Re-running writes only sidecars whose content changed, and removes the sidecars facelab wrote
    for photos that no longer have a named face. A sidecar that differs from what facelab last
    wrote (another program edited it, or it was there before) is never overwritten: it is listed
    in ``kept``. Raises :class:`UnsafeSidecarDir` for a folder inside the library.
    """
    from facelab.imageio import write_bytes_atomic, write_text_atomic

    check_sidecar_dir(dest, library)
    root = os.path.abspath(library)
    dest = Path(os.path.abspath(dest))
    library_root = Path(root).resolve()
    marker = _read_marker(dest)
    ours = marker.get(root, {})
    now: dict[str, str] = {}
    result = SidecarResult()
    for photo, (width, height, regions) in library_regions(ws, Path(root)).items():
        result.photos += 1
        target = sidecar_path(dest, Path(root), photo)
        relative = target.relative_to(dest).as_posix()
        if _inside(target.resolve(), library_root):  # e.g. a link in DIR that leads into the library
            result.errors.append((target, f"would be written inside the library {root}; not written"))
            continue
        data = regions_xmp(width, height, regions)
        try:
            current = target.read_bytes() if target.is_file() else None
        except OSError:
            current = None
        if current == data:
            result.unchanged += 1
        elif current is not None and ours.get(relative) != _digest(current):
            result.kept.append(target)
            continue  # not ours, or edited since: someone's work we must not overwrite
        else:
            try:
                write_bytes_atomic(data, target)
            except OSError as exc:
                result.errors.append((target, f"cannot write ({exc.strerror or exc}) — check the folder's permissions"))
                continue
            result.written += 1
        now[relative] = _digest(data)
    for relative, digest in ours.items():
        if relative in now or not _safe_relative(relative):
            continue
        stale = dest / relative
        try:
            if stale.is_file() and not stale.is_symlink() and _digest(stale.read_bytes()) == digest:
                stale.unlink()
                result.removed += 1
        except OSError as exc:
            result.errors.append((stale, f"cannot remove ({exc.strerror or exc})"))
    if now or ours:
        marker[root] = now
        write_text_atomic(json.dumps({"libraries": marker}, indent=1, sort_keys=True) + "\n", dest / MARKER)
    return result
