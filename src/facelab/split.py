"""Split photos into train / val / test without leakage, and export the seed's folder layout.

Splitting is by *photo group*, not by crop: every face of one photo, byte-identical copies (same
sha256) and near-duplicates (perceptual hashes within ``NEAR_DUPLICATE_BITS``) land in the same
split, so no test face has a twin in training. Within each person the groups are shuffled with the
seed and dealt out to the ratios, so every person is represented in every split they can be.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from scipy.cluster.hierarchy import DisjointSet

from facelab.imageio import write_text_atomic
from facelab.items import FaceSelection, load_items
from facelab.store import Workspace
from facelab.types import Split

# Hamming distance (of 64 bits) under which two photos count as the same picture. Resized and
# re-compressed copies measure 0–6; different photos of one person rarely fall under 12. Raise it
# to group more aggressively (burst shots), lower it if distinct photos get grouped.
NEAR_DUPLICATE_BITS = 8

SPLITS = (Split.TRAIN, Split.VAL, Split.TEST)


@dataclass
class SplitResult:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # person -> split -> photos
    warnings: list[str] = field(default_factory=list)
    groups_merged: int = 0
    exported: int = 0
    manifest: Path | None = None


def _hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def photo_groups(rows: list) -> DisjointSet:
    """Union photos that are the same picture: equal sha256, or perceptual hashes within the bound."""
    groups = DisjointSet(row["id"] for row in rows)
    by_sha: dict[str, int] = {}
    for row in rows:
        first = by_sha.setdefault(row["sha256"], row["id"])
        if first != row["id"]:
            groups.merge(first, row["id"])
    hashed = [(row["id"], row["phash"]) for row in rows if row["phash"]]
    for i, (id_a, hash_a) in enumerate(hashed):
        for id_b, hash_b in hashed[i + 1 :]:
            if _hamming(hash_a, hash_b) <= NEAR_DUPLICATE_BITS:
                groups.merge(id_a, id_b)
    return groups


def _deal(n_groups: int, ratios: tuple[float, float, float]) -> list[Split]:
    """How many of a person's n groups go to each split, as a list of splits in dealing order."""
    if n_groups >= 3:
        n_test = max(1, round(n_groups * ratios[2]))
        n_val = max(1, round(n_groups * ratios[1]))
        n_train = max(1, n_groups - n_test - n_val)
        # Rounding can over-commit small folders: take back from the larger of val/test.
        while n_train + n_val + n_test > n_groups:
            if n_val >= n_test and n_val > 1:
                n_val -= 1
            else:
                n_test -= 1
        return [Split.TEST] * n_test + [Split.VAL] * n_val + [Split.TRAIN] * n_train
    if n_groups == 2:
        return [Split.TEST, Split.TRAIN]
    return [Split.TRAIN] * n_groups


def split_workspace(
    ws: Workspace,
    ratios: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    faces: FaceSelection | str = FaceSelection.RESOLVED,
    export: bool = True,
) -> SplitResult:
    """Assign every readable photo to a split (stored in the database) and export the layout.

    ``ratios`` are train/val/test fractions of each person's photo groups; ``seed`` makes the
    shuffle repeatable. A person with fewer than three photo groups cannot fill three splits: with
    two they get train + test, with one only train, and a warning says so.
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"ratios must be three non-negative fractions summing to 1, got {ratios}")
    # Photos without a face are split too: photo-level evaluation counts a test photo whose face
    # was never found as a miss, as a person would. Photos a build marked missing (drive not
    # mounted, folder unreadable) stay in: their crops are in the workspace, and a split that
    # changed whenever a drive is unplugged would move photos between train and test.
    rows = ws.query(
        "SELECT id, person, sha256, phash FROM photos WHERE status IN ('ok', 'no_face') ORDER BY person, path"
    )
    groups = photo_groups(rows)
    result = SplitResult()
    result.groups_merged = len(rows) - groups.n_subsets if rows else 0
    person_of = {row["id"]: row["person"] for row in rows}
    assignment: dict[int, Split] = {}
    rng = random.Random(seed)
    groups_by_person: dict[str, list[frozenset[int]]] = defaultdict(list)
    for subset in groups.subsets():
        members = frozenset(subset)
        # A group spanning several people's folders (the same photo filed twice) is dealt with
        # the person holding most of it.
        owners = sorted(person_of[m] for m in members)
        owner = max(set(owners), key=owners.count)
        groups_by_person[owner].append(members)
    for person in sorted(groups_by_person):
        person_groups = sorted(groups_by_person[person], key=min)
        rng.shuffle(person_groups)
        dealt = _deal(len(person_groups), ratios)
        if len(person_groups) < 3:
            kept = ", ".join(sorted({s.value for s in dealt}))
            result.warnings.append(
                f"{person}: only {len(person_groups)} distinct photo(s) with a face — too few for "
                f"train/val/test; using {kept}. Add photos of {person} for an honest test."
            )
        for members, split in zip(person_groups, dealt, strict=True):
            for photo_id in members:
                assignment[photo_id] = split
    with ws.transaction() as conn:
        conn.execute("UPDATE photos SET split = NULL")
        conn.executemany("UPDATE photos SET split = ? WHERE id = ?", [(s.value, pid) for pid, s in assignment.items()])
    ws.set_setting("split", json.dumps({"ratios": list(ratios), "seed": seed, "faces": str(faces)}))
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {s.value: 0 for s in SPLITS})
    for photo_id, split in assignment.items():
        counts[person_of[photo_id]][split.value] += 1
    result.counts = dict(sorted(counts.items()))
    if export:
        result.exported, result.manifest = export_dataset(ws, faces)
    return result


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def export_dataset(ws: Workspace, faces: FaceSelection | str = FaceSelection.RESOLVED) -> tuple[int, Path]:
    """Write ``WS/dataset/{train,val,test}/<person>/*.jpg`` and ``manifest.csv``, replacing the old export.

    Built in a temporary folder and swapped in, so a reader never sees half an export.
    """
    items = [item for item in load_items(ws, None, faces) if item.split]
    sha_of = {r["id"]: r["sha256"] for r in ws.query("SELECT id, sha256 FROM photos")}
    final = ws.dataset_dir
    staging = ws.root / ".dataset.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["crop", "photo", "photo_sha256", "person", "split"])
    for item in items:
        target = staging / item.split / item.person / item.crop_path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(item.crop_path, target)
        relative = Path("dataset") / item.split / item.person / item.crop_path.name
        writer.writerow([relative.as_posix(), str(item.photo_path), sha_of[item.photo_id], item.person, item.split])
    staging.mkdir(parents=True, exist_ok=True)
    write_text_atomic(buffer.getvalue(), staging / "manifest.csv")
    old = ws.root / ".dataset.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return len(items), final / "manifest.csv"
