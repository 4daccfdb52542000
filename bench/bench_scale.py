"""Photos per second of ``facelab album index`` on one machine: 1 process, every core (local engine),
and a local Ray (issue #18); writes docs/benchmarks_scale.md.

    .venv/bin/python bench/bench_scale.py [--data ../shared/data] [--photos 100] [--train 5]
        [--ray-cpus 2] [--repeats 1] [--workspace WS] [--doc docs/benchmarks_scale.md]

Photos. For each person of ``sports5`` and ``celeb5`` the first ``--train`` distinct photos (file-name
order, sha256) train the model; the library is the next photos of every person in turn (byte copies
of a training photo left out) until ``--photos`` are chosen, so no photo is both trained on and
indexed. The model: ``facelab build``, ``split``, ``train --track embedding`` on the training photos
(or ``--workspace WS``, an existing workspace with a current model).

Runs. Each configuration indexes the same library into a fresh copy of the workspace, in a fresh
Python process (as ``facelab album index`` would run): ``engine=local, workers=1`` (this process),
``engine=local, workers=<cores>``, ``engine=ray, workers=--ray-cpus`` (a Ray started on this
machine with that many CPUs by the command), and the same on a Ray "cluster" of this machine alone
started beforehand with ``ray start --head --num-cpus=--ray-cpus`` (as docs/scale.md tells), joined
as a node's driver (``--address HEAD:PORT``: Ray Data) and through Ray Client (``ray://``: Ray Core
drives the actors). *Wall* is from the process's start to the last photo stored: imports,
model loading, worker/actor start-up and Ray's start included. *Steady* is (photos - 1) / (time of
the last photo - time of the first), the rate once the workers run. The best of ``--repeats`` runs
counts (other jobs on a shared machine only slow a run down); the load average before each run is
recorded beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from machine_info import machine_line

REPO = Path(__file__).resolve().parents[1]
SETS = ("sports5", "celeb5")
IMAGE = re.compile(r".*\.(jpg|jpeg|png)$", re.IGNORECASE)


def load() -> str:
    """The load average (1/5/15 min)."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def choose(data: Path, n_train: int, n_photos: int) -> tuple[dict[str, list[Path]], list[Path]]:
    """Training photos per person and the library (see the module docstring)."""
    train: dict[str, list[Path]] = {}
    rest: list[list[Path]] = []
    for set_name in SETS:
        for folder in sorted(p for p in (data / set_name).iterdir() if p.is_dir()):
            seen: set[str] = set()
            mine, others = [], []
            for path in sorted(p for p in folder.rglob("*") if p.is_file() and IMAGE.match(p.name)):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if len(mine) < n_train and digest not in seen:
                    mine.append(path)
                elif digest not in seen:
                    others.append(path)
                seen.add(digest)
            train[folder.name] = mine
            rest.append(others)
    library: list[Path] = []
    # Round robin over the people, so a small library still has every person and both sets.
    while len(library) < n_photos and any(rest):
        for others in rest:
            if others and len(library) < n_photos:
                library.append(others.pop(0))
    return train, library


def facelab(*args: str | Path) -> None:
    cmd = [str(Path(sys.executable).parent / "facelab"), *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def train_workspace(train: dict[str, list[Path]], root: Path) -> Path:
    folder = root / "train"
    for person, paths in train.items():
        (folder / person).mkdir(parents=True)
        for path in paths:
            (folder / person / path.name).symlink_to(path.resolve())
    ws = root / "model-ws"
    facelab("build", folder, "-w", ws, "-q")
    facelab("split", ws)
    facelab("train", ws, "--track", "embedding", "-q")
    return ws


def run_one(ws: str, library: str, engine: str, workers: int, started: float, address: str | None) -> None:
    """In a fresh process: index ``library`` into ``ws``; prints JSON timings (``--run-one``)."""
    from facelab.album_index import index_library
    from facelab.recognize import Recognizer
    from facelab.store import Workspace

    stamps: list[float] = []
    recognizer = Recognizer.from_path(ws)
    with Workspace(Path(ws)) as workspace:
        result = index_library(
            workspace,
            Path(library),
            recognizer,
            engine=engine,
            workers=workers,
            address=address,
            progress=lambda done, total, path: stamps.append(time.time()),
        )
    print(
        json.dumps(
            {
                "photos": len(stamps),
                "indexed": result.indexed,
                "errors": len(result.errors),
                "faces": result.faces,
                "wall": stamps[-1] - started,
                "steady": (len(stamps) - 1) / (stamps[-1] - stamps[0]) if stamps[-1] > stamps[0] else None,
            }
        )
    )


def measure(
    model_ws: Path, library: Path, engine: str, workers: int, scratch: Path, address: str = ""
) -> dict[str, Any]:
    ws = scratch / f"ws-{engine}-{workers}"
    shutil.rmtree(ws, ignore_errors=True)
    shutil.copytree(model_ws, ws, symlinks=True)
    before = load()
    started = time.time()
    cmd = [sys.executable, __file__, "--run-one", str(ws), str(library), engine, str(workers), str(started), address]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    timing = json.loads(done.stdout.strip().splitlines()[-1])
    timing["load"] = before
    print(f"{engine} workers={workers} {address}: {timing}", file=sys.stderr)
    return timing


@contextlib.contextmanager
def ray_head(cpus: int) -> Iterator[dict[str, str]]:
    """A Ray cluster of this machine alone, started as docs/scale.md says (``ray start --head``) and
    stopped after; its addresses: ``gcs`` (a node's driver) and ``client`` (Ray Client)."""
    ray_cli = str(Path(sys.executable).parent / "ray")
    gcs, client = 6391, 10001  # Ray's worker ports start at 10002
    subprocess.run(
        [ray_cli, "start", "--head", f"--port={gcs}", f"--ray-client-server-port={client}", f"--num-cpus={cpus}"],
        capture_output=True,
        check=True,
        env=os.environ | {"RAY_USAGE_STATS_ENABLED": "0"},
    )
    try:
        yield {"gcs": f"127.0.0.1:{gcs}", "client": f"ray://127.0.0.1:{client}"}
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, check=False)


def versions() -> str:
    import ray

    from facelab import __version__

    return f"facelab {__version__}, Ray {ray.__version__}"


def write_doc(doc: Path, rows: list[tuple[str, dict[str, Any]]], photos: int, faces: int, note: str) -> None:
    lines = [
        "## Indexing a library on one machine (photos/s)",
        "",
        f"`bench/bench_scale.py`, {dt.datetime.now():%Y-%m-%d %H:%M}: {machine_line()}; {versions()}. "
        f"{photos} held-out photos of sports5 + celeb5 ({faces} faces), `facelab album index` on a fresh "
        "workspace each run. *Wall*: from the process's start to the last photo stored (imports, model "
        "loading, workers' or Ray's start-up included — a cluster started beforehand is not); *steady*: the "
        "rate between the first photo stored "
        f"and the last. Best of the runs; the load average (1/5/15 min) before the run beside it. {note}".rstrip(),
        "",
        "| engine | workers | wall (s) | photos/s (wall) | photos/s (steady) | load before |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, t in rows:
        steady = f"{t['steady']:.2f}" if t["steady"] else "—"
        engine, workers = label.rsplit(":", 1)
        lines.append(
            f"| {engine} | {workers} | {t['wall']:.1f} | {t['photos'] / t['wall']:.2f} | {steady} | {t['load']} |"
        )
    lines.append("")
    doc.write_text("\n".join(lines))
    print(f"written {doc}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--run-one":
        ws, library, engine, workers, started, address = sys.argv[2:8]
        run_one(ws, library, engine, int(workers), float(started), address or None)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--photos", type=int, default=100, help="library size")
    parser.add_argument("--train", type=int, default=5, help="training photos per person")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs (actors) of the local Ray")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workspace", type=Path, help="an existing workspace with a current model")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks_scale.md")
    parser.add_argument("--note", default="", help="a sentence added under the table's heading")
    args = parser.parse_args()

    from facelab.threads import available_cpus

    cores = available_cpus()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        scratch = Path(tmp)
        train, photos = choose(args.data, args.train, args.photos)
        library = scratch / "library"
        for i, path in enumerate(photos):
            link = library / path.parent.name / f"{i:04d}-{path.name}"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
        model_ws = args.workspace or train_workspace(train, scratch)
        # (label, engine, workers, address kind): "" a Ray started by the command itself, else a
        # cluster started beforehand with `ray start --head` and joined as a node's driver or
        # through Ray Client.
        configs = [
            ("local", "local", 1, ""),
            ("local", "local", cores, ""),
            ("ray, started by the command", "ray", args.ray_cpus, ""),
            ("ray, cluster joined as a node (`HEAD:PORT`)", "ray", args.ray_cpus, "gcs"),
            ("ray, cluster through Ray Client (`ray://`)", "ray", args.ray_cpus, "client"),
        ]
        best: dict[str, dict[str, Any]] = {}
        with ray_head(args.ray_cpus) as addresses:
            for _ in range(args.repeats):
                for label, engine, workers, kind in configs:
                    timing = measure(model_ws, library, engine, workers, scratch, addresses.get(kind, ""))
                    key = f"{label}:{workers}"
                    if key not in best or timing["wall"] < best[key]["wall"]:
                        best[key] = timing
        faces = next(iter(best.values()))["faces"]
        write_doc(args.doc, list(best.items()), len(photos), faces, args.note)


if __name__ == "__main__":
    main()
