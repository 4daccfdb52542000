"""XMP sidecars with MWG face regions: what they hold, read back by an independent XMP library (exiv2,
through pyexiv2), and how they are written (never into the library, only when changed).

The library (built per module): held-out photos of the tiny model's people in nested folders, one
of them also stored sideways with EXIF Orientation 6 (as phones do), a photo of somebody the model
does not know and a photo without a face.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from facelab.types import Box
from facelab.xmp import MARKER, NS, Region, normalized_area, regions_xmp, write_sidecars

pyexiv2 = pytest.importorskip("pyexiv2", reason="pyexiv2 (test dependency, pip install -e '.[dev]') is missing")

ORIENTATION = 0x0112
REGION_LIST = "Xmp.mwg-rs.Regions/mwg-rs:RegionList"


def cli(*args: str):
    from typer.testing import CliRunner

    from facelab.cli import app, recognize_cmds  # noqa: F401  (registers the commands)

    return CliRunner().invoke(app, list(args))


def read_regions(path: Path) -> tuple[tuple[int, int, str], list[tuple[str, str, tuple[float, ...]]]]:
    """What exiv2 reads from a sidecar: ((w, h, unit), [(name, type, (x, y, w, h)), ...])."""
    image = pyexiv2.Image(str(path))
    try:
        xmp = image.read_xmp()
    finally:
        image.close()
    dims = "Xmp.mwg-rs.Regions/mwg-rs:AppliedToDimensions/stDim:"
    applied = (int(xmp[dims + "w"]), int(xmp[dims + "h"]), xmp[dims + "unit"])
    regions = []
    i = 1
    while f"{REGION_LIST}[{i}]/mwg-rs:Name" in xmp:
        item = f"{REGION_LIST}[{i}]/mwg-rs:"
        assert xmp[item + "Area/stArea:unit"] == "normalized"
        area = tuple(float(xmp[item + f"Area/stArea:{k}"]) for k in "xywh")
        regions.append((xmp[item + "Name"], xmp[item + "Type"], area))
        i += 1
    return applied, regions


# -- the XML itself ---------------------------------------------------------------------------------


def test_regions_are_centre_and_size_normalised_and_names_escaped(tmp_path: Path) -> None:
    names = ['Zoë & <Bob> "Q"', "李小龙 🙂", "tab\there\x01"]
    boxes = [Box(100, 50, 200, 170), Box(300, 200, 340, 260), Box(-20, 400, 60, 520)]  # the last one leaves the image
    data = regions_xmp(640, 480, [Region(n, b) for n, b in zip(names, boxes, strict=True)])
    path = tmp_path / "photo.jpg.xmp"
    path.write_bytes(data)

    applied, regions = read_regions(path)
    assert applied == (640, 480, "pixel")
    assert [(n, t) for n, t, _ in regions] == [(names[0], "Face"), (names[1], "Face"), ("tab\there", "Face")]
    np.testing.assert_allclose(regions[0][2], (150 / 640, 110 / 480, 100 / 640, 120 / 480), atol=1e-6)
    # Clipped to the image: x from 0 to 60, y from 400 to 480.
    np.testing.assert_allclose(regions[2][2], (30 / 640, 440 / 480, 60 / 640, 80 / 480), atol=1e-6)

    # A second, independent reader: the namespaces are the standard URIs, the structure MWG's.
    body = data.decode("utf-8")
    root = ET.fromstring(body[body.index("<x:xmpmeta") : body.index("</x:xmpmeta>") + len("</x:xmpmeta>")])
    regions_el = root.find("rdf:RDF/rdf:Description/mwg-rs:Regions", NS)
    assert regions_el is not None
    dims = regions_el.find("mwg-rs:AppliedToDimensions", NS)
    assert dims is not None and dims.get(f"{{{NS['stDim']}}}unit") == "pixel"
    items = regions_el.findall("mwg-rs:RegionList/rdf:Bag/rdf:li/rdf:Description", NS)
    assert [el.get(f"{{{NS['mwg-rs']}}}Name") for el in items][:2] == names[:2]
    assert NS["mwg-rs"] == "http://www.metadataworkinggroup.com/schemas/regions/"
    assert NS["stArea"] == "http://ns.adobe.com/xmp/sType/Area#"
    assert NS["stDim"] == "http://ns.adobe.com/xap/1.0/sType/Dimensions#"
    # The same regions give the same bytes (so re-runs can skip unchanged sidecars).
    assert regions_xmp(640, 480, [Region(n, b) for n, b in zip(names, boxes, strict=True)]) == data


def test_a_box_outside_the_image_is_no_region() -> None:
    assert normalized_area(Box(700, 10, 800, 50), 640, 480) is None
    assert b"RegionList" in regions_xmp(640, 480, [Region("x", Box(700, 10, 800, 50))])
    with pytest.raises(ValueError, match="positive width"):
        regions_xmp(0, 480, [])


# -- sidecars of an indexed library (tiny_model skips them where dlib or RetinaFace is missing) ------


@pytest.fixture(scope="module")
def library(tiny_model, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    from facelab.imageio import load_rgb

    root = tmp_path_factory.mktemp("xmp-library") / "Pictures"
    (root / "2020" / "summer").mkdir(parents=True)
    (root / "2021").mkdir()
    held = tiny_model.held_out
    (root / "2020" / "summer" / "jerry.jpg").symlink_to(held["jerry_seinfeld"][0])
    (root / "2020" / "madonna.jpg").symlink_to(held["madonna"][0])
    (root / "2021" / "elton.jpg").symlink_to(held["elton_john"][1])
    # The same photo stored sideways with Orientation 6 ("turn 90° clockwise to show"), as phones save it.
    upright = load_rgb(held["elton_john"][1])
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(upright))).save(root / "2021" / "elton-phone.jpg", exif=exif)
    assert load_rgb(root / "2021" / "elton-phone.jpg").shape == upright.shape
    stranger = sorted((shared_data / "sports5" / "virat_kohli").iterdir())[0]
    (root / "2021" / "someone.jpg").symlink_to(stranger)
    Image.new("RGB", (320, 240), (200, 210, 220)).save(root / "sky.png")
    return root


@pytest.fixture(scope="module")
def indexed(tiny_model, library: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(workspace, sidecar folder) after album index --xmp-dir; never changed by the tests."""
    base = tmp_path_factory.mktemp("xmp-ws")
    ws, xmp = base / "ws", base / "xmp"
    shutil.copytree(tiny_model.workspace, ws, symlinks=True)
    result = cli("album", "index", str(library), "-w", str(ws), "-q", "--xmp-dir", str(xmp))
    assert result.exit_code == 0, result.output
    assert f"XMP sidecars in {xmp}:" in result.stderr
    return ws, xmp


def album_rows(ws: Path) -> dict[str, tuple[int, int, list[tuple[str, Box]]]]:
    from facelab.store import Workspace

    with Workspace(ws) as db:
        rows = db.query(
            "SELECT p.path, p.width, p.height, f.name, f.x1, f.y1, f.x2, f.y2 FROM album_photos p "
            "JOIN album_faces f ON f.photo_id = p.id WHERE f.name IS NOT NULL ORDER BY p.path, f.idx"
        )
    out: dict[str, tuple[int, int, list[tuple[str, Box]]]] = {}
    for r in rows:
        out.setdefault(r["path"], (r["width"], r["height"], []))[2].append(
            (r["name"], Box(r["x1"], r["y1"], r["x2"], r["y2"]))
        )
    return out


def test_sidecars_hold_the_named_faces_of_the_album(indexed: tuple[Path, Path], library: Path) -> None:
    ws, xmp = indexed
    named = album_rows(ws)
    # Every known person's photo is named (measured), the stranger's and the empty one are not.
    assert {Path(p).name for p in named} >= {"jerry.jpg", "madonna.jpg", "elton.jpg", "elton-phone.jpg"}
    written = {p.relative_to(xmp).as_posix() for p in xmp.rglob("*.xmp")}
    assert written == {str(Path(p).relative_to(library)) + ".xmp" for p in named}
    assert "2020/summer/jerry.jpg.xmp" in written and "sky.png.xmp" not in written
    # Nothing was written into the library.
    assert not [p for p in library.rglob("*") if p.suffix == ".xmp" or p.name == MARKER]

    for photo, (width, height, faces) in named.items():
        applied, regions = read_regions(xmp / (str(Path(photo).relative_to(library)) + ".xmp"))
        assert applied == (width, height, "pixel")
        assert [(n, t) for n, t, _ in regions] == [(n, "Face") for n, _ in faces]
        for (_, box), (_, _, area) in zip(faces, regions, strict=True):
            expected = normalized_area(box, width, height)
            assert expected is not None
            # x is the centre: the left edge is x - w/2.
            assert area[0] - area[2] / 2 == pytest.approx(max(box.x1, 0) / width, abs=1e-3)
            np.testing.assert_allclose(area, expected, atol=1e-3)


def test_a_sideways_photo_gets_upright_dimensions_and_regions(indexed: tuple[Path, Path]) -> None:
    _, xmp = indexed
    flat, flat_regions = read_regions(xmp / "2021" / "elton.jpg.xmp")
    phone, phone_regions = read_regions(xmp / "2021" / "elton-phone.jpg.xmp")
    # Stored sideways, shown upright: the regions apply to the upright image, as the album's boxes do.
    assert phone == flat
    assert [n for n, _, _ in phone_regions] == [n for n, _, _ in flat_regions]
    np.testing.assert_allclose([a for _, _, a in phone_regions], [a for _, _, a in flat_regions], atol=0.02)


def test_rerunning_rewrites_only_changed_sidecars(indexed: tuple[Path, Path], library: Path, tmp_path: Path) -> None:
    from facelab.store import Workspace

    ws = tmp_path / "ws"
    shutil.copytree(indexed[0], ws, symlinks=True)
    xmp = tmp_path / "xmp"
    with Workspace(ws) as db:
        first = write_sidecars(db, library, xmp)
        assert first.written == first.photos >= 4 and not first.errors
        stamps = {p: p.stat().st_mtime_ns for p in xmp.rglob("*.xmp")}
        again = write_sidecars(db, library, xmp)
        assert (again.written, again.unchanged) == (0, first.photos)
        assert {p: p.stat().st_mtime_ns for p in xmp.rglob("*.xmp")} == stamps

        jerry, madonna, elton = (
            xmp / "2020/summer/jerry.jpg.xmp",
            xmp / "2020/madonna.jpg.xmp",
            xmp / "2021/elton.jpg.xmp",
        )
        with db.transaction() as conn:
            conn.execute("UPDATE album_faces SET name = 'Jerry' WHERE name = 'jerry_seinfeld'")
            conn.execute(
                "UPDATE album_faces SET name = NULL WHERE photo_id = (SELECT id FROM album_photos WHERE path = ?)",
                (str(library / "2020" / "madonna.jpg"),),
            )
        elton.write_text("edited by another program")  # someone's work: never overwritten
        changed = write_sidecars(db, library, xmp)
    assert (changed.written, changed.removed, changed.kept) == (1, 1, [elton])
    assert read_regions(jerry)[1][0][0] == "Jerry"
    assert not madonna.exists()
    assert elton.read_text() == "edited by another program"
    assert {p for p in stamps if p.exists() and p.stat().st_mtime_ns != stamps[p]} == {jerry, elton}


def test_a_sidecar_folder_inside_the_library_is_refused(indexed: tuple[Path, Path], library: Path) -> None:
    ws, _ = indexed
    for inside in (library, library / "2021" / "xmp"):
        result = cli("album", "index", str(library), "-w", str(ws), "--xmp-dir", str(inside))
        assert result.exit_code == 2, result.output
        assert "is inside the library" in result.stderr and "--xmp-dir" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (library / "2021" / "xmp").exists()
    assert not list(library.rglob("*.xmp"))
