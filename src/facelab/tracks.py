"""Importing this module registers the run loader of every built-in track (see runs.py)."""

from facelab import embed_track, transfer  # noqa: F401
