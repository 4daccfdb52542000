"""People as a photo manager keeps them (facelab.people, `facelab people …`): rename, merge and
delete on a copy of the tiny celeb5 workspace; each change survives a re-build of the same photo
folder, keeps review decisions, never touches a photo, and recognition shows the new names."""

from __future__ import annotations

import csv
import hashlib
import importlib
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facelab import people
from facelab.build import build
from facelab.cli import COMMAND_MODULES, app
from facelab.recognize import Recognizer
from facelab.reports import write_reports
from facelab.store import Workspace


@pytest.fixture()
def copy(tiny_model, tmp_path: Path) -> tuple[Path, Path]:
    """(workspace copy, the photo folder it was built from)."""
    target = tmp_path / "ws"
    shutil.copytree(tiny_model.workspace, target, symlinks=True)
    return target, tiny_model.workspace.parent / "photos"


def _count(ws: Workspace, person: str) -> int:
    return ws.query("SELECT COUNT(*) AS n FROM photos WHERE person = ?", (person,))[0]["n"]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rename_and_merge_survive_a_rebuild_and_keep_review_decisions(copy: tuple[Path, Path]) -> None:
    root, photos = copy
    before = _digest(photos)
    with Workspace(root, create=False) as ws:
        n_ben, n_elton, n_madonna = (_count(ws, p) for p in ("ben_afflek", "elton_john", "madonna"))
        rejected = ws.query("SELECT id FROM crops WHERE person = 'ben_afflek' ORDER BY id LIMIT 1")[0]["id"]
        ws.conn.execute("UPDATE crops SET status = 'rejected' WHERE id = ?", (rejected,))

        change = people.rename(ws, "ben_afflek", "Ben Affleck")
        assert (
            change.photos == n_ben and change.faces >= n_ben and "renamed ben_afflek to Ben Affleck" in change.words()
        )
        merged = people.merge(ws, "elton_john", "madonna")
        assert merged.photos == n_elton

        result = build(photos, ws)  # the folders are still ben_afflek/ and elton_john/
        assert result.unchanged == result.scanned  # nothing re-detected
        assert _count(ws, "Ben Affleck") == n_ben and _count(ws, "ben_afflek") == 0
        assert _count(ws, "madonna") == n_madonna + n_elton and _count(ws, "elton_john") == 0
        status = ws.query("SELECT person, status FROM crops WHERE id = ?", (rejected,))[0]
        assert (status["person"], status["status"]) == ("Ben Affleck", "rejected")

        with pytest.raises(people.PeopleError, match="merge"):
            people.rename(ws, "Ben Affleck", "madonna")  # a name taken: the message says merge
        with pytest.raises(people.PeopleError, match="no person called"):
            people.merge(ws, "nobody", "madonna")
    assert _digest(photos) == before  # photos never touched


def test_delete_forgets_a_person_until_restored(copy: tuple[Path, Path]) -> None:
    root, photos = copy
    before = _digest(photos)
    with Workspace(root, create=False) as ws:
        n_jerry = _count(ws, "jerry_seinfeld")
        crop_files = [root / r["path"] for r in ws.query("SELECT path FROM crops WHERE person = 'jerry_seinfeld'")]
        assert crop_files and all(p.is_file() for p in crop_files)
        change = people.delete(ws, "jerry_seinfeld")
        assert change.photos == n_jerry and "deleted jerry_seinfeld" in change.words()
        assert not any(p.exists() for p in crop_files)  # our crops go; the photos stay
        assert _count(ws, "jerry_seinfeld") == 0

        result = build(photos, ws)
        assert _count(ws, "jerry_seinfeld") == 0  # the re-build does not bring them back
        write_reports(ws)
        with (root / "reports" / "errors.csv").open(encoding="utf-8") as handle:
            kinds = {row["kind"] for row in csv.DictReader(handle)}
        assert "deleted person" in kinds
        assert any(s.kind == "deleted person" for s in result.skipped)

        people.restore(ws, "jerry_seinfeld")
        build(photos, ws)
        assert _count(ws, "jerry_seinfeld") == n_jerry
    assert _digest(photos) == before


def test_recognition_shows_the_new_names_at_once(copy: tuple[Path, Path], tiny_model) -> None:
    root, _ = copy
    ben = tiny_model.held_out["ben_afflek"][0]
    jerry = tiny_model.held_out["jerry_seinfeld"][0]
    assert Recognizer.from_path(root).recognize_photo(ben).recognitions[0].name == "ben_afflek"
    with Workspace(root, create=False) as ws:
        people.rename(ws, "ben_afflek", "Ben Affleck")
        people.delete(ws, "jerry_seinfeld")
    recognizer = Recognizer.from_path(root)  # the run still holds the trained names
    assert recognizer.recognize_photo(ben).recognitions[0].name == "Ben Affleck"
    assert recognizer.recognize_photo(jerry).recognitions[0].name is None  # deleted: unknown
    assert "Ben Affleck" in recognizer.classes and "jerry_seinfeld" not in recognizer.classes


def test_people_commands_speak_one_line_and_exit_2_on_mistakes(copy: tuple[Path, Path]) -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    root, _ = copy
    runner = CliRunner()
    renamed = runner.invoke(app, ["people", "rename", str(root), "madonna", "Madonna"])
    assert renamed.exit_code == 0, renamed.output
    assert "renamed madonna to Madonna" in renamed.stdout
    listed = runner.invoke(app, ["people", "list", "-w", str(root)])
    assert listed.exit_code == 0 and "Madonna" in listed.stdout
    for args in (
        ["people", "rename", str(root), "nobody", "X"],
        ["people", "merge", str(root), "Madonna"],
        ["people", "rename", str(root), "Madonna", "unknown"],
        ["people", "restore", str(root), "Madonna"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output and result.stderr.strip()


def test_the_python_api_changes_people_the_same_way(copy: tuple[Path, Path], tiny_model) -> None:
    import facelab

    root, _ = copy
    ws = facelab.Workspace(root)
    assert "renamed madonna to Madonna" in ws.rename_person("madonna", "Madonna")
    photo = tiny_model.held_out["madonna"][0]
    assert [face.name for face in ws.recognize(photo)] == ["Madonna"]
    assert "merged elton_john into Madonna" in ws.merge_people("elton_john", "Madonna")
    assert "elton_john" not in ws.people
