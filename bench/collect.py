"""Gather the tables the benchmark scripts wrote (docs/benchmarks_*.md) into docs/benchmarks.md.

    .venv/bin/python bench/collect.py

Each bench script owns one section file and names the machine it ran on; this only puts them
in reading order under one page.
"""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
ORDER = (
    "summary",
    "accuracy",
    "fewshot",
    "one_person",
    "study",
    "unknown",
    "small_faces",
    "cnn_openset",
    "metric",
    "detectors",
    "embedding",
    "embedders",
    "dlib_onnx",
    "train",
    "recognize",
    "album",
    "album_scale",
    "scale",
)

HEADER = """# facelab benchmarks

Every number here comes from a script under `bench/` run on the machine its section names; re-run
a script to refresh its section, then `bench/collect.py` to rebuild this page. Test sets are small
(celeb5: ~23 test photos, sports5: ~71): one photo moves a figure by 4 and 1.4 points.

"""


def main() -> None:
    sections = []
    for name in ORDER:
        path = DOCS / f"benchmarks_{name}.md"
        if path.exists():
            sections.append(path.read_text().strip() + "\n")
    (DOCS / "benchmarks.md").write_text(HEADER + "\n".join(sections))
    print(f"written {DOCS / 'benchmarks.md'} from {len(sections)} sections")


if __name__ == "__main__":
    main()
