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
