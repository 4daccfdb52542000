"""facelab: build a face data set from your own photos and recognize your people.

The Python API (nothing heavy loads at import; see :mod:`facelab.api`)::

    import facelab
    ws = facelab.Workspace("workspace")          # made by `facelab run PHOTOS -w workspace`
    for face in ws.recognize("photo.jpg"):
        print(face.name, face.box, face.score)   # name is "unknown" for strangers
    facelab.verify("a.jpg", "b.jpg").same
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "FaceFound",
    "RecognizedFace",
    "Verification",
    "Workspace",
    "__version__",
    "embed",
    "find_faces",
    "verify",
]

if TYPE_CHECKING:
    from facelab.api import FaceFound, RecognizedFace, Verification, Workspace, embed, find_faces, verify


def __getattr__(name: str) -> Any:
    # Lazy: `import facelab` stays instant (the CLI imports it for --version); the API module
    # loads on first use.
    if name in __all__ and name != "__version__":
        from facelab import api

        return getattr(api, name)
    raise AttributeError(f"module 'facelab' has no attribute {name!r}")
