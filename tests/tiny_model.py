"""Test helpers on the shared photo sets: the tiny recognition model several test modules share
(conftest's ``tiny_model`` fixture) and links to LFW strangers (``stranger_links``).

build → identity resolution → split → embedding-track prototype run over four celeb5 people with
six photos each, calibrated on 40 LFW strangers; a few photos of each person are held out.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

PEOPLE = ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna")
TRAIN_PHOTOS = 6


@dataclass(frozen=True)
class TinyModel:
    workspace: Path
    run_dir: Path
    held_out: dict[str, list[Path]]  # photos of each person the model never saw, one face each


def link_strangers(shared_data: Path, folder: Path, n: int) -> Path:
    """``folder`` filled with links to the first ``n`` LFW strangers of ../shared/data."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted((shared_data / "strangers").iterdir())[:n]:
        (folder / path.name).symlink_to(path)
    return folder


def build_tiny_model(shared_data: Path, root: Path) -> TinyModel:
    """A workspace under ``root`` whose current model is an embedding run."""
    from facelab.build import build
    from facelab.embed_track import train_embedding_run
    from facelab.embedders import find_faces
    from facelab.identity import resolve_identities
    from facelab.imageio import iter_image_files, load_rgb
    from facelab.split import split_workspace
    from facelab.store import Workspace

    photos = root / "photos"
    held_out: dict[str, list[Path]] = {}
    for person in PEOPLE:
        files = list(iter_image_files(shared_data / "celeb5" / person))
        (photos / person).mkdir(parents=True)
        for path in files[:TRAIN_PHOTOS]:
            shutil.copy(path, photos / person / path.name)
        # Held-out photos with exactly one face: the answer for them is unambiguous.
        held_out[person] = [p for p in files[TRAIN_PHOTOS : TRAIN_PHOTOS + 8] if len(find_faces(load_rgb(p))) == 1][:4]
    strangers = link_strangers(shared_data, root / "strangers", 40)
    with Workspace(root / "ws") as ws:
        build(photos, ws)
        resolve_identities(ws)
        split_workspace(ws, ratios=(0.7, 0.3, 0.0))
        run_dir = train_embedding_run(ws, head="prototype", strangers=strangers, target_fpir=0.01)
        ws.set_setting("current_model", run_dir.name)
    return TinyModel(root / "ws", run_dir, held_out)


def copy_workspace(source: Path, dest: Path) -> Path:
    """A private copy of a workspace (links kept as links). Its runs read the copy's own gallery: a
    run belongs to the workspace it lies in (facelab.embed_track), so enrolling into the copy never
    touches the shared original."""
    shutil.copytree(source, dest, symlinks=True)
    return dest
