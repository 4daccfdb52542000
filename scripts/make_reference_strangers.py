"""Write the reference stranger embeddings that ship inside facelab (``src/facelab/reference/``).

facelab calibrates "unknown" without a strangers folder partly from *reference* evidence: the face
embeddings of many people who are nobody's people. They come from ``../shared/data/reference_strangers``
(999 Labeled Faces in the Wild people with one image each, none of them in ``strangers/`` or in the
shared photo sets); only the vectors ship — never a photo or a name.

Every face the default detector finds is kept (not only the largest): a stranger photo with a
second, smaller face in the background can be named on either, and recognition answers for every
face. Each face records its shorter side in pixels so calibration can leave out faces smaller than
the recognizer would name.

Run: ``.venv/bin/python scripts/make_reference_strangers.py [--embedder dlib] [--source DIR]``.
The ensemble ``dlib+facenet`` is composed from the two parts' files (same detector, so the same faces
in the same order) with the ensemble's own weights, instead of detecting and embedding again:
``--embedder dlib+facenet`` after ``--embedder dlib`` and ``--embedder facenet``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from facelab.embedders import find_faces, get_embedder
    from facelab.imageio import ImageError, iter_image_files, load_rgb, write_bytes_atomic
    from facelab.reference import reference_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedder", default="dlib")
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "reference_strangers")
    args = parser.parse_args()
    if args.embedder == "dlib+facenet":
        compose_ensemble()
        return
    embedder = get_embedder(args.embedder)
    vectors, photo, short_side, largest, digests = [], [], [], [], []
    files = sorted(iter_image_files(args.source))
    for number, path in enumerate(files):
        data = path.read_bytes()
        digests.append(hashlib.sha256(data).hexdigest()[:16])
        try:
            rgb = load_rgb(path)
        except ImageError:
            continue
        faces = find_faces(rgb)
        if not faces:
            continue
        sides = [min(f.box.width, f.box.height) for f in faces]
        biggest = int(np.argmax([f.box.width * f.box.height for f in faces]))
        for i, vector in enumerate(embedder.embed(rgb, faces)):
            vectors.append(vector)
            photo.append(number)
            short_side.append(sides[i])
            largest.append(i == biggest)
        if number % 100 == 0:
            print(f"{number}/{len(files)} photos, {len(vectors)} faces", flush=True)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        vectors=np.stack(vectors).astype(np.float32),
        photo=np.asarray(photo, np.int32),
        short_side=np.asarray(short_side, np.float32),
        largest=np.asarray(largest, bool),
        photo_sha256_prefix=np.asarray(digests),
        n_photos=np.asarray(len(files)),
    )
    out = reference_path(args.embedder)
    write_bytes_atomic(buffer.getvalue(), out)
    print(f"wrote {out}: {len(vectors)} faces of {len(set(photo))} photos ({len(files)} read)")


def compose_ensemble() -> None:
    """``strangers-dlib+facenet.npz`` from the two parts' files, as ConcatEmbedder would embed them."""
    from facelab.embedder_facenet import ENSEMBLE_WEIGHTS, concat_unit
    from facelab.imageio import write_bytes_atomic
    from facelab.reference import reference_path

    parts = {name: np.load(reference_path(name)) for name in ENSEMBLE_WEIGHTS}
    first, *others = parts.values()
    for other in others:  # the same faces of the same photos, or the composition is meaningless
        for key in ("photo", "short_side", "largest", "photo_sha256_prefix"):
            if not np.array_equal(first[key], other[key]):
                raise SystemExit(f"the parts' reference files differ in {key!r}: make them again with one detector")
    vectors = concat_unit([parts[name]["vectors"] for name in ENSEMBLE_WEIGHTS], list(ENSEMBLE_WEIGHTS.values()))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, vectors=vectors, **{k: first[k] for k in first.files if k != "vectors"})
    out = reference_path("+".join(ENSEMBLE_WEIGHTS))
    write_bytes_atomic(buffer.getvalue(), out)
    print(f"wrote {out}: {len(vectors)} faces composed from {', '.join(ENSEMBLE_WEIGHTS)}")


if __name__ == "__main__":
    main()
