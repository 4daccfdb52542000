"""Training speed and accuracy of the transfer track on celeb5; writes docs/benchmarks_train.md.

    .venv/bin/python bench/bench_train.py                 # CPU, about 15 minutes on 2 cores
    .venv/bin/python bench/bench_train.py --device cuda --out docs/benchmarks_train_gpu.md

The workspace is built from ../shared/data/celeb5 with facelab's own build and split (or, if
those are missing, with simple OpenCV Haar crops and a seeded split, and the table says so).
Every configuration runs in its own process, so its peak memory (ru_maxrss) is its own.
Backbones without weights on this machine run with random initialisation, marked ``none``.
Timings are wall-clock on whatever else the machine is doing: the table records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from facelab.store import Workspace

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

# (label, options, note). Epoch counts keep the CPU run near 15 minutes on 2 cores.
HEADLINE = [
    (
        "mobilenet_v2 feature-extract (defaults)",
        {"backbone": "mobilenet_v2"},
        "160 px, rotation: plain + 1 augmented feature pass",
    ),
    ("mobilenet_v2 feature-extract, no aug", {"backbone": "mobilenet_v2", "augment": "none"}, "1 feature pass"),
    (
        "mobilenet_v2 feature-extract, 4 aug passes",
        {"backbone": "mobilenet_v2", "aug_passes": 4},
        "plain + 4 rotation passes",
    ),
    ("mobilenet_v2 feature-extract, 224 px", {"backbone": "mobilenet_v2", "image_size": 224}, ""),
    ("efficientnet_lite0 feature-extract", {"backbone": "efficientnet_lite0"}, "160 px, rotation"),
    (
        "mobilenet_v2 fine-tune 20 epochs",
        {"backbone": "mobilenet_v2", "strategy": "fine-tune", "epochs": 20, "patience": 0},
        "no early stop: all 20 epochs timed",
    ),
    (
        "mobilenet_v2 two-stage",
        {"backbone": "mobilenet_v2", "strategy": "two-stage", "head_epochs": 10, "epochs": 8, "patience": 0},
        "10 head + 8 all-layer epochs",
    ),
    (
        "mobilenet_v2 --preset seed (capped)",
        {"backbone": "mobilenet_v2", "strategy": "fine-tune", "preset": "seed", "epochs": 12},
        "seed recipe (224 px, no normalisation, Adam 1e-3, batch 32), 12 of its 100 epochs",
    ),
]
ALL_BACKBONES = [
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_lite0",
    "efficientnet_b0",
    "squeezenet1_0",
    "resnet18",
    "resnet50",
    "densenet121",
    "alexnet",
    "vgg16",
    "reference",
]


def build_workspace(root: Path, photos: Path) -> str:
    """Build + split ``photos`` into workspace ``root``; returns how the crops were made."""
    from facelab.store import Workspace

    with Workspace(root) as ws:
        try:
            from facelab.build import build
            from facelab.split import split_workspace
        except ImportError:
            return _haar_workspace(ws, photos)
        result = build(photos, ws)
        from facelab.identity import IdentityUnavailable, resolve_identities

        try:
            resolve_identities(ws)  # which face of a group photo is the folder's person
        except IdentityUnavailable as exc:  # needs dlib; faces then keep build's one-face rule
            print(f"identity resolution skipped: {exc}", file=sys.stderr)
        split_workspace(ws, seed=0)
        detector = ws.query("SELECT detector FROM photos WHERE detector IS NOT NULL LIMIT 1")
        how = detector[0]["detector"] if detector else "facelab build"
        return f"facelab build ({how}; {result.processed} photos) + facelab split (seed 0)"


def _haar_workspace(ws: Workspace, photos: Path) -> str:
    import cv2
    from PIL import Image

    from facelab.imageio import load_rgb

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    rng = random.Random(0)
    for person_dir in sorted(p for p in photos.iterdir() if p.is_dir()):
        files = sorted(person_dir.iterdir())
        rng.shuffle(files)
        for i, path in enumerate(files):
            rgb = load_rgb(path)
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            found = cascade.detectMultiScale(gray, 1.1, 5, minSize=(30, 30))
            if len(found) == 0:
                continue
            x, y, w, h = (float(v) for v in max(found, key=lambda b: b[2] * b[3]))
            side = 1.3 * max(w, h)
            x1, y1 = int(x + w / 2 - side / 2), int(y + h / 2 - side / 2)
            pad = int(side)
            padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REFLECT)
            crop = cv2.resize(padded[y1 + pad : y1 + pad + int(side), x1 + pad : x1 + pad + int(side)], (256, 256))
            split = "val" if i % 5 == 0 else "test" if i % 5 == 1 else "train"
            rel = Path("crops") / person_dir.name / f"{i}.jpg"
            (ws.root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(crop).save(ws.root / rel, quality=95)
            with ws.transaction() as conn:
                pid = conn.execute(
                    "INSERT INTO photos(path, person, status, split) VALUES (?, ?, 'ok', ?)",
                    (str(path), person_dir.name, split),
                ).lastrowid
                fid = conn.execute(
                    "INSERT INTO faces(photo_id, idx, x1, y1, x2, y2, role) VALUES (?, 0, ?, ?, ?, ?, 'person')",
                    (pid, x, y, x + w, y + h),
                ).lastrowid
                conn.execute(
                    "INSERT INTO crops(face_id, path, person) VALUES (?, ?, ?)", (fid, str(rel), person_dir.name)
                )
    ws.set_setting("crop_margin", "1.3")
    return "OpenCV Haar crops (facelab build missing) + seeded 60/20/20 split by photo"


def run_one(workspace: Path, options: dict, name: str) -> dict:
    """One training run in this process; returns its summary plus timing extras."""
    from facelab.config import TrainConfig
    from facelab.store import Workspace
    from facelab.transfer import PrintReporter, train_workspace

    started = time.perf_counter()
    preset = options.pop("preset", "default")
    with Workspace(workspace, create=False) as ws:
        config = TrainConfig.from_preset(preset, **options)
        result = train_workspace(ws, config, name=name, reporter=PrintReporter())
    summary = dict(result.summary)
    history = result.history
    image_epochs = [r["seconds"] for r in history if r["phase"] == "all"]
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    # The median all-layer epoch after the first: the first also pays one-off set-up (oneDNN
    # kernel selection, page faults), which would make one-epoch figures meaningless.
    warm = image_epochs[1:] or image_epochs
    summary["seconds_per_epoch"] = (
        round(statistics.median(warm), 2) if warm else round(statistics.median(r["seconds"] for r in history), 3)
    )
    return summary


def in_subprocess(workspace: Path, options: dict, name: str, device: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    cmd = [
        sys.executable,
        __file__,
        "--one",
        json.dumps({**options, "device": device}),
        "--name",
        name,
        "--workspace",
        str(workspace),
        "--result",
        str(out),
    ]
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1][:200]}
    summary = json.loads(out.read_text())
    out.unlink()
    summary["load"] = f"{load_before:.1f}/{os.getloadavg()[0]:.1f}"
    return summary


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def machine() -> str:
    import torch

    from machine_info import cpu_model

    cpu = cpu_model()

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu}{gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}; {date.today().isoformat()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=SHARED / "celeb5")
    parser.add_argument("--workspace", type=Path, help="Reuse a built and split workspace.")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks_train.md")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--backbones", default=",".join(ALL_BACKBONES), help="Comma list for the per-backbone table.")
    parser.add_argument("--skip-headline", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    os.environ.setdefault("FACELAB_OFFLINE", "1")  # a benchmark must not wait on the network
    if args.one:
        summary = run_one(args.workspace, json.loads(args.one), args.name)
        args.result.write_text(json.dumps(summary))
        return

    from facelab.items import load_items
    from facelab.store import Workspace
    from facelab.weights import hub_checkpoints_dir, locate

    workspace = args.workspace
    if workspace is None:
        workspace = Path(tempfile.mkdtemp(prefix="facelab-bench-")) / "ws"
        t0 = time.perf_counter()
        how = build_workspace(workspace, args.photos)
        with Workspace(workspace) as ws:
            ws.set_setting("bench_how", how)  # so a rerun with --workspace can say how it was made
        print(f"workspace {workspace} built in {time.perf_counter() - t0:.0f} s: {how}", file=sys.stderr)
    stamp = time.strftime("%Y%m%d-%H%M%S")  # run names unique per invocation: reruns never collide
    with Workspace(workspace, create=False) as ws:
        n = {s: len(load_items(ws, s)) for s in ("train", "val", "test")}
        how = ws.setting("bench_how", "a given workspace")

    lines = [
        "## Training (transfer track)",
        "",
        f"Machine: {machine()}. Device asked: `{args.device}`.",
        f"Data: celeb5 (5 people), {n['train']} train / {n['val']} val faces; crops: {how}.",
        "Every run in its own process; `peak MB` is its maximum resident memory (ru_maxrss). "
        "`load` is the 1-minute load average before/after the run (other jobs on the machine slow it).",
        "",
    ]
    if not args.skip_headline:
        lines += [
            "### Strategies (mobilenet_v2 unless named)",
            "",
            "| run | best val acc | at epoch | seconds to best | total s | CPU s | s/epoch | feature s "
            "| peak MB | weights | load | notes |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for i, (label, options, note) in enumerate(HEADLINE):
            s = in_subprocess(workspace, dict(options), f"bench-{stamp}-{i}", args.device)
            print(
                label, json.dumps({k: s.get(k) for k in ("val_accuracy", "seconds_to_best", "error")}), file=sys.stderr
            )
            if "error" in s:
                lines.append(f"| {label} | error: {s['error']} |||||||||| {note} |")
                continue
            lines.append(
                f"| {label} | {_pct(s['val_accuracy'])} | {s['best_epoch']}/{s['epochs_run']} | "
                f"{s['seconds_to_best']:.1f} | {s['train_seconds']:.1f} | {s['cpu_seconds']:.0f} | "
                f"{s['seconds_per_epoch']} | "
                f"{s['feature_seconds']:.1f} | {s['peak_rss_mb']:.0f} | {s['weights']} | {s['load']} | {note} |"
            )
        lines.append("")
    names = [b for b in args.backbones.split(",") if b]
    if names:
        lines += [
            "### Per backbone (160 px, batch 32; fine-tune: 2nd of 2 epochs; feature extraction: no augmentation)",
            "",
            "| backbone | weights | fine-tune s/epoch | CPU s (2 epochs) | fine-tune peak MB | features s (train+val) "
            "| feature-extract val acc | feature-extract peak MB | load |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name in names:
            weights = "pretrained" if _has_weights(name) else "none"
            ft = in_subprocess(
                workspace,
                {"backbone": name, "strategy": "fine-tune", "epochs": 2, "patience": 0, "weights": weights},
                f"bench-{stamp}-ft-{name}",
                args.device,
            )
            fe = in_subprocess(
                workspace,
                {"backbone": name, "augment": "none", "epochs": 60, "weights": weights},
                f"bench-{stamp}-fe-{name}",
                args.device,
            )
            print(name, ft.get("seconds_per_epoch"), fe.get("val_accuracy"), file=sys.stderr)
            if "error" in ft or "error" in fe:
                lines.append(f"| {name} | error: {ft.get('error') or fe.get('error')} ||||||||")
                continue
            lines.append(
                f"| {name} | {fe['weights']} | {ft['seconds_per_epoch']} | {ft['cpu_seconds']:.0f} | "
                f"{ft['peak_rss_mb']:.0f} | "
                f"{fe['feature_seconds']:.1f} | {_pct(fe['val_accuracy'])} | {fe['peak_rss_mb']:.0f} | "
                f"{ft['load']} |"
            )
        lines.append("")
    lines.append(
        f"Weights found offline in {hub_checkpoints_dir()} or packages; "
        "`none` = random initialisation (no weights file on this machine). "
        f"mobilenet_v2 file: {'present' if locate('mobilenet_v2-b0353104.pth', install=False) else 'missing'}."
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written {args.out}", file=sys.stderr)


def _has_weights(name: str) -> bool:
    from facelab.backbones import get, weights_status

    _, found = weights_status(get(name))
    return found is not None


if __name__ == "__main__":
    main()
