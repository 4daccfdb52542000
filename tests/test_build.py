"""Build and split on real photos: originals untouched, bad files reported, re-runs incremental."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facelab.build import build
from facelab.reports import write_reports
from facelab.split import split_workspace
from facelab.store import Workspace


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_people(shared: Path, dest: Path, per_person: int = 4, people: int = 2) -> list[Path]:
    copied = []
    for person_dir in sorted((shared / "celeb5").iterdir())[:people]:
        for photo in sorted(person_dir.iterdir())[:per_person]:
            target = dest / person_dir.name / photo.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(photo, target)
            copied.append(target)
    return copied


@pytest.fixture
def photo_folder(tmp_path: Path, shared_data: Path) -> Path:
    root = tmp_path / "photos"
    _copy_people(shared_data, root)
    person = sorted(root.iterdir())[0]
    (person / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (person / "empty.png").write_bytes(b"")
    (person / "deeper" / "album").mkdir(parents=True)
    # A photo without a face: smooth sky-like gradient.
    sky = np.linspace(120, 230, 300 * 400 * 3).reshape(300, 400, 3).astype(np.uint8)
    Image.fromarray(sky).save(person / "deeper" / "album" / "sky.png")
    (root / "loose.jpg").write_bytes(b"x")
    return root


def test_build_reads_only_reports_bad_files_and_writes_crops(photo_folder: Path, tmp_path: Path) -> None:
    originals = {p: _sha(p) for p in photo_folder.rglob("*") if p.is_file()}
    with Workspace(tmp_path / "ws") as ws:
        result = build(photo_folder, ws)
        reports = write_reports(ws)
        assert result.scanned == 11
        bad = sorted(issue.path.name for issue in result.errors)
        assert bad == ["broken.jpg", "empty.png"]
        assert all(issue.reason and issue.fix for issue in result.errors)
        assert [p.name for p in result.no_face] == ["sky.png"]
        assert [p.name for p in result.outside_person_folder] == ["loose.jpg"]
        # Every real celebrity photo yields at least one face, each with a 256×256 crop on disk.
        crops = ws.query("SELECT path FROM crops")
        assert len(crops) >= 8
        for row in crops:
            with Image.open(ws.root / row["path"]) as crop:
                assert crop.size == (256, 256)
        with reports["no_face"].open() as handle:
            rows = list(csv.reader(handle))
        assert rows[0][0] == "photo" and rows[1][0].endswith("sky.png")
        with reports["errors"].open() as handle:
            listed = {row["photo"]: row["kind"] for row in csv.DictReader(handle)}
        # The unreadable files, and the loose photo the scan skipped: every input left out is named.
        assert {Path(p).name: kind for p, kind in listed.items()} == {
            "broken.jpg": "unreadable",
            "empty.png": "unreadable",
            "loose.jpg": "loose photo",
        }
    after = {p: _sha(p) for p in photo_folder.rglob("*") if p.is_file()}
    assert after == originals, "build must never modify, move or rename a user's photo"


def test_rebuild_is_incremental(photo_folder: Path, tmp_path: Path, shared_data: Path) -> None:
    with Workspace(tmp_path / "ws") as ws:
        first = build(photo_folder, ws)
        n_faces = len(ws.query("SELECT id FROM faces"))
        second = build(photo_folder, ws)
        assert second.processed == 0
        assert len(second.errors) == 2  # only the unreadable files are tried again
        assert second.unchanged == first.scanned - 2
        assert len(ws.query("SELECT id FROM faces")) == n_faces
        new = sorted((shared_data / "celeb5" / "madonna").iterdir())[0]
        shutil.copy2(new, photo_folder / "madonna_new.jpg")  # loose: not counted
        person = sorted(p for p in photo_folder.iterdir() if p.is_dir())[1]
        shutil.copy2(new, person / "new.jpg")
        third = build(photo_folder, ws)
        assert third.processed == 1
        (person / "new.jpg").unlink()
        fourth = build(photo_folder, ws)
        # Absence is not deletion: the photo is kept (faces, crops) as missing until --prune.
        assert [p.name for p in fourth.missing] == ["new.jpg"] and fourth.pruned == 0
        assert len(ws.query("SELECT id FROM faces")) == n_faces + 1
        fifth = build(photo_folder, ws, prune=True)
        assert fifth.pruned == 1 and fifth.missing == []
        assert len(ws.query("SELECT id FROM faces")) == n_faces
        on_disk = {p.relative_to(ws.root).as_posix() for p in ws.crops_dir.rglob("*.jpg")}
        assert on_disk == {r["path"] for r in ws.query("SELECT path FROM crops")}


def test_a_face_drawn_by_hand_survives_re_detection(tmp_path: Path) -> None:
    from facelab.server.workspace_ops import add_manual_face
    from facelab.types import Box

    folder = tmp_path / "photos" / "alice"
    folder.mkdir(parents=True)
    # No detector finds a face in a smooth gradient; the user draws one where they know it is.
    sky = np.linspace(120, 230, 300 * 400 * 3).reshape(300, 400, 3).astype(np.uint8)
    Image.fromarray(sky).save(folder / "backlit.png")
    with Workspace(tmp_path / "ws") as ws:
        build(tmp_path / "photos", ws)
        photo = ws.query("SELECT id, status FROM photos")[0]
        assert photo["status"] == "no_face"
        add_manual_face(ws, photo["id"], Box(100, 80, 200, 200))
        # Another margin re-detects every photo: the drawn face must come back, re-cut, still accepted.
        build(tmp_path / "photos", ws, margin=1.6)
        rows = ws.query(
            "SELECT f.x1, f.y1, f.x2, f.y2, f.detector, f.role, f.role_source, c.status, c.margin, c.path "
            "FROM faces f JOIN crops c ON c.face_id = f.id"
        )
        assert len(rows) == 1
        face = rows[0]
        assert (face["x1"], face["y1"], face["x2"], face["y2"]) == (100, 80, 200, 200)
        assert (face["detector"], face["role"], face["role_source"]) == ("manual", "person", "review")
        assert face["status"] == "accepted" and face["margin"] == 1.6
        assert (ws.root / face["path"]).is_file()
        assert ws.query("SELECT status FROM photos")[0]["status"] == "ok"


def test_kill_minus_nine_loses_and_duplicates_nothing(tmp_path: Path, shared_data: Path) -> None:
    photos = tmp_path / "photos"
    _copy_people(shared_data, photos, per_person=12, people=2)
    ws_dir = tmp_path / "ws"
    script = (
        "import sys; from facelab.build import build; from facelab.store import Workspace\n"
        "ws = Workspace(sys.argv[2]); build(sys.argv[1], ws)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(photos), str(ws_dir)])
    db = ws_dir / ".facelab" / "facelab.db"
    deadline = time.time() + 120
    # Kill once a few photos are in: mid-run, wherever it is.
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            with Workspace(ws_dir, create=False) as ws:
                if len(ws.query("SELECT id FROM photos")) >= 3:
                    break
        time.sleep(0.2)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Workspace(ws_dir) as ws:
        partial = len(ws.query("SELECT id FROM photos"))
        result = build(photos, ws)
        assert partial < 24 or result.unchanged == 24
        assert result.scanned == 24
        assert len(ws.query("SELECT id FROM photos")) == 24
        assert len(ws.query("SELECT DISTINCT path FROM photos")) == 24
        faces = ws.query("SELECT photo_id, idx FROM faces")
        assert len(faces) == len({(f["photo_id"], f["idx"]) for f in faces})
        on_disk = {p.relative_to(ws.root).as_posix() for p in ws.crops_dir.rglob("*.jpg")}
        assert on_disk == {r["path"] for r in ws.query("SELECT path FROM crops")}


def test_split_groups_duplicates_and_never_leaks(tmp_path: Path, shared_data: Path) -> None:
    photos = tmp_path / "photos"
    for person in ("alice", "bob"):
        source = sorted((shared_data / "strangers").iterdir())[: 8 if person == "alice" else 16]
        source = source[:8] if person == "alice" else source[8:16]
        for photo in source:
            (photos / person).mkdir(parents=True, exist_ok=True)
            shutil.copy2(photo, photos / person / photo.name)
    # Byte-identical copies (as sports5 has) and a resized near-duplicate.
    first = sorted((photos / "alice").iterdir())[0]
    shutil.copy2(first, photos / "alice" / f"{first.stem} (1).jpg")
    with Image.open(first) as image:
        image.resize((200, 200)).save(photos / "alice" / "resized_copy.jpg", quality=80)
    with Workspace(tmp_path / "ws") as ws:
        build(photos, ws)
        result = split_workspace(ws, (0.6, 0.2, 0.2), seed=3)
        assert result.groups_merged >= 2
        splits = {r["path"]: r["split"] for r in ws.query("SELECT path, split FROM photos WHERE status = 'ok'")}
        twins = [p for p in splits if Path(p).stem.startswith(first.stem) or "resized_copy" in p]
        assert len(twins) == 3 and len({splits[p] for p in twins}) == 1
        for person in ("alice", "bob"):
            assert set(result.counts[person]) == {"train", "val", "test"}
            assert all(result.counts[person][s] >= 1 for s in ("train", "val", "test"))
        with (ws.dataset_dir / "manifest.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert list(rows[0]) == ["crop", "photo", "photo_sha256", "person", "split"]
        by_photo: dict[str, set[str]] = {}
        for row in rows:
            by_photo.setdefault(row["photo_sha256"], set()).add(row["split"])
            assert (ws.root / row["crop"]).is_file()
        assert all(len(s) == 1 for s in by_photo.values()), "no photo may sit in two splits"
        # Same seed, same split.
        again = split_workspace(ws, (0.6, 0.2, 0.2), seed=3)
        assert again.counts == result.counts


def test_split_warns_for_tiny_folders(tmp_path: Path, shared_data: Path) -> None:
    photos = tmp_path / "photos"
    for i, photo in enumerate(sorted((shared_data / "strangers").iterdir())[:2]):
        (photos / "carol").mkdir(parents=True, exist_ok=True)
        shutil.copy2(photo, photos / "carol" / f"{i}.jpg")
    with Workspace(tmp_path / "ws") as ws:
        build(photos, ws)
        result = split_workspace(ws)
        assert any("carol" in w and "too few" in w for w in result.warnings)
        assert result.counts["carol"]["train"] == 1


def test_bad_ratios_are_refused(tmp_path: Path) -> None:
    with Workspace(tmp_path / "ws") as ws, pytest.raises(ValueError, match="sum"):
        split_workspace(ws, (0.5, 0.2, 0.2))


def test_identical_copies_with_long_names_keep_their_own_crops(tmp_path: Path, shared_data: Path) -> None:
    # sports5 holds byte-identical copies whose long names differ only at the end ("x.jpg", "x (1).jpg").
    photos = tmp_path / "photos" / "dana"
    photos.mkdir(parents=True)
    source = sorted((shared_data / "strangers").iterdir())[0]
    long_stem = "a_very_long_photo_name_downloaded_from_some_website_with_tracking_ids_123456789"
    for i, name in enumerate((f"{long_stem}.jpg", f"{long_stem} (1).jpg", "b.jpg", "c.jpg")):
        shutil.copy2(source if i < 2 else sorted((shared_data / "strangers").iterdir())[i], photos / name)
    with Workspace(tmp_path / "ws") as ws:
        build(tmp_path / "photos", ws)
        paths = [r["path"] for r in ws.query("SELECT path FROM crops")]
        assert len(paths) == len(set(paths)) == 4
        split_workspace(ws)
        exported = list((ws.dataset_dir).rglob("*.jpg"))
        assert len(exported) == 4
