"""facelab: build a face data set from your own photos and recognize your people."""

__version__ = "0.1.0"
