"""Recognize people with facelab's Python API (run by tests/test_workflow.py).

    python docs/examples/recognize_with_api.py WORKSPACE PHOTO [PHOTO ...]

WORKSPACE is one made by `facelab run PHOTOS -w WORKSPACE` (or Workspace.create / build / train).
"""

from __future__ import annotations

import sys

import facelab


def main(workspace: str, photos: list[str]) -> list[tuple[str, str]]:
    ws = facelab.Workspace(workspace)  # opens an existing workspace; nothing loads yet
    answers = []
    for photo in photos:
        for face in ws.recognize(photo):  # every face, "unknown" for strangers
            x1, y1, x2, y2 = face.box
            print(f"{photo}: {face.name} at ({x1}, {y1})-({x2}, {y2}), score {face.score:.2f}")
            answers.append((photo, face.name))
    if len(photos) >= 2:
        check = facelab.verify(photos[0], photos[1])  # the largest face of each
        print(f"same person: {check.same} (distance {check.distance:.2f}, threshold {check.threshold:.2f})")
    return answers


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
