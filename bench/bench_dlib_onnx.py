"""dlib's face network: dlib's own runtime against the same network in onnxruntime (facelab.dlib_onnx).

    .venv/bin/python bench/bench_dlib_onnx.py [--data ../shared/data] [--faces 16] [--rounds 5]
        [--doc docs/benchmarks_dlib_onnx.md]

Cuts dlib's aligned 150×150 chips of the first ``--faces`` faces of celeb5 (facelab's default
detector, dlib's 5-point landmarks, padding 0.25), checks that both runtimes give the same vectors,
then times the network alone on those chips: dlib (``compute_face_descriptor`` on chips; the
``dlib-bin`` wheel has no BLAS and runs on one thread), onnxruntime with 1 thread and with its
default (one per core), each with batches of 1 and 8 chips. It also times the whole embedder call
(landmarks + chip + network, one face per call) for each backend. Configurations take turns within
each round, so a change of machine load hits them alike; the table gives the median round.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from machine_info import machine_line

REPO = Path(__file__).resolve().parents[1]


def load_faces(data: Path, count: int) -> list[tuple[np.ndarray, object]]:
    """``(photo, face)`` pairs: faces of celeb5 photos in folder order until ``count``."""
    from facelab.embedders import find_faces
    from facelab.imageio import iter_image_files, load_rgb

    out: list[tuple[np.ndarray, object]] = []
    for person in sorted(p for p in (data / "celeb5").iterdir() if p.is_dir()):
        for path in iter_image_files(person):
            rgb = load_rgb(path)
            for face in find_faces(rgb)[:1]:
                out.append((rgb, face))
            if len(out) >= count:
                return out
    return out


def time_pass(run: Callable[[], object]) -> tuple[float, float]:
    """Wall and process-CPU seconds of one call of ``run``."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--faces", type=int, default=16, help="chips to time (a multiple of 8)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks_dlib_onnx.md")
    args = parser.parse_args()

    import dlib
    import onnxruntime

    from facelab.dlib_onnx import DlibOnnxNetwork
    from facelab.embedders import DlibEmbedder, _face_models_dir

    load_start = os.getloadavg()
    dat = _face_models_dir() / "dlib_face_recognition_resnet_model_v1.dat"
    faces = load_faces(args.data, args.faces)
    n = len(faces) - len(faces) % 8
    faces = faces[:n]
    onnx_embedder = DlibEmbedder("dlib", backend="onnx")
    dlib_embedder = DlibEmbedder("dlib", backend="dlib")
    chips = np.stack([onnx_embedder._chips(rgb, [face])[0] for rgb, face in faces])
    network = dlib.face_recognition_model_v1(str(dat))
    sessions = {"1 thread": DlibOnnxNetwork(dat, threads=1), "default threads": DlibOnnxNetwork(dat)}

    reference = np.asarray([np.asarray(v) for v in network.compute_face_descriptor(list(chips))], np.float32)
    worst = max(float(np.abs(s.compute(chips) - reference).max()) for s in sessions.values())
    whole = np.concatenate([onnx_embedder.embed(rgb, [face]) for rgb, face in faces])
    whole_ref = np.concatenate([dlib_embedder.embed(rgb, [face]) for rgb, face in faces])
    worst = max(worst, float(np.abs(whole - whole_ref).max()))

    def batches(size: int) -> list[np.ndarray]:
        return [chips[i : i + size] for i in range(0, n, size)]

    configs: dict[tuple[str, int], Callable[[], object]] = {
        ("dlib", 1): lambda: [network.compute_face_descriptor(c[0]) for c in batches(1)],
        ("dlib", 8): lambda: [network.compute_face_descriptor(list(c)) for c in batches(8)],
    }
    for label, session in sessions.items():
        for size in (1, 8):
            configs[(f"onnxruntime, {label}", size)] = lambda s=session, b=size: [s.compute(c) for c in batches(b)]
    whole_configs: dict[str, Callable[[], object]] = {
        "dlib": lambda: [dlib_embedder.embed(rgb, [face]) for rgb, face in faces],
        "onnxruntime, default threads": lambda: [onnx_embedder.embed(rgb, [face]) for rgb, face in faces],
    }
    for run in [*configs.values(), *whole_configs.values()]:  # warm up: first runs allocate
        run()
    walls: dict[object, list[float]] = {key: [] for key in [*configs, *whole_configs]}
    cpus: dict[object, list[float]] = {key: [] for key in walls}
    for _ in range(args.rounds):
        for key, run in [*configs.items(), *whole_configs.items()]:
            wall, cpu = time_pass(run)
            walls[key].append(wall / n * 1000)
            cpus[key].append(cpu / n * 1000)
    load_end = os.getloadavg()

    def ms(key: object) -> float:
        return statistics.median(walls[key])

    base = {size: ms(("dlib", size)) for size in (1, 8)}
    lines = [
        "## dlib's face network: dlib vs onnxruntime",
        "",
        f"Measured by `bench/bench_dlib_onnx.py` on {dt.date.today().isoformat()}: {machine_line()}; "
        f"dlib {dlib.__version__} (`DLIB_USE_BLAS` = {dlib.DLIB_USE_BLAS}), onnxruntime {onnxruntime.__version__}. "
        f"Load average (1 min) {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end: the machine was "
        "shared with other jobs, so the times are those of a busy machine.",
        "",
        f"{n} real faces (celeb5, dlib's aligned 150×150 chips); median of {args.rounds} rounds in which the "
        "configurations take turns. The network alone (chips already cut):",
        "",
        "| runtime | batch | ms/face (wall) | CPU ms/face (all threads) | speed-up over dlib |",
        "|---|---|---|---|---|",
    ]
    for (label, size), _ in configs.items():
        key = (label, size)
        cpu = statistics.median(cpus[key])
        lines.append(f"| {label} | {size} | {ms(key):.1f} | {cpu:.1f} | {base[size] / ms(key):.1f}× |")
    lines += [
        "",
        "The whole embedder call, `DlibEmbedder.embed(photo, [face])` (5-point landmarks, chip, network; one "
        "face per call):",
        "",
        "| backend | ms/face (wall) | CPU ms/face |",
        "|---|---|---|",
    ]
    for key in whole_configs:
        lines.append(f"| {key} | {ms(key):.1f} | {statistics.median(cpus[key]):.1f} |")
    one, default = ms(("onnxruntime, 1 thread", 8)), ms(("onnxruntime, default threads", 8))
    if one < default:
        lines += [
            "",
            f"On this busy machine one onnxruntime thread beat its default ({one:.1f} against {default:.1f} "
            "ms/face at batch 8): the extra threads wait for cores other processes hold, and spin while they "
            "wait. Worker pools and busy machines should set `FACELAB_THREADS=1` (or `DlibEmbedder(threads=1)`).",
        ]
    lines += [
        "",
        f"Same vectors: the largest difference between onnxruntime's and dlib's vectors on these faces was "
        f"{worst:.1e} (vectors have length ~1.6; `tests/test_dlib_onnx.py` holds it to 1e-4), so the embedder "
        "keeps its name `dlib` and stored vectors and calibrations stay valid. The onnx path is the default; "
        "`FACELAB_DLIB_BACKEND=dlib` forces dlib's own network. dlib's runtime has no threads of its own here, "
        "so its rows are single-threaded whatever the core count.",
        "",
    ]
    args.doc.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
