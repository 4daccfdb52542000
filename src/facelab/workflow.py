"""The user's journey, written once: the CLI, the web app's jobs and the Python API all call these.

Each user-level step lives here exactly once — ingest photos, split, train a run, calibrate it,
evaluate it, deploy it (make it the model ``recognize WS`` uses) — so that every front end gives
the same answers for the same photos. Front ends only parse their input, call, and show.

Deploying is the step that used to differ most. Here it is one rule (:func:`deploy`):

* ``facelab use WS RUN`` (``force=True``) makes any finished run current — the user said so.
* Training (``train``, ``auto``, ``run``, the web) proposes its run, and it becomes current only
  if it is no worse than the current one on the *same* validation faces, naming and "unknown"
  judged together (the share of the people's validation faces not given their own name at each
  run's calibrated threshold, :func:`validation_miss_rate`). A run that cannot answer unknown (no
  calibrated threshold) never replaces an open-set one automatically. Either way the outcome
  says why, in words.
* The deployed model is refit on every labelled face (train + val + test), into ``RUN/deployed/``
  (:func:`refit_on_all`: seconds for an embedding run; a CNN is trained again with its recipe for
  the epochs validation chose): a person with two photos is then recognized from both. Its
  ``summary.json`` says the test figures come from ``RUN``, which stays the run that evaluation,
  comparison and listings see.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelab import openset
from facelab.items import FaceSelection, load_items
from facelab.store import Workspace
from facelab.writelock import write_lock

Progress = Callable[[int, int, object], None]

CURRENT_MODEL = "current_model"
DEPLOYED = "deployed"  # RUN/deployed/: the current run refit on every labelled face
# The files of an embedding run that loading needs; the refit replaces head.npz.
_REFIT_FILES = ("summary.json", "config.yaml", "history.csv")
# A run's unknown answer: its threshold and, for CNN runs, the embedding gate. A refit keeps them.
CALIBRATION_FILES = ("openset.json", "gate.npz", "gate.json")


def _copy_calibration(run_dir: Path, target: Path) -> None:
    for name in CALIBRATION_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, target / name)


def _staging(run_dir: Path, copy: tuple[str, ...] = ()) -> Path:
    """A fresh ``RUN/.deployed.tmp``, where a refit is built before :func:`_swap_in` puts it in place
    whole: not there yet when ``copy`` is empty (a trainer makes it), else holding the run's files
    named in ``copy`` and its calibration."""
    staging = run_dir / f".{DEPLOYED}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    if copy:
        staging.mkdir()
        for name in copy:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, staging / name)
        _copy_calibration(run_dir, staging)
    return staging


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by the finished ``staging`` folder."""
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


@dataclass(frozen=True)
class Defaults:
    """One source of defaults for every front end (CLI options, web forms, Python API).

    * ``min_face``: faces whose shorter side is below this many pixels are skipped by recognition
      (reason ``too small``): below ~32 px the embedding's distances stop being reliable and
      strangers in the background get names (``openset.MIN_FACE``, measured in
      docs/benchmarks_small_faces.md). Raise it to leave background faces unnamed.
    * ``target_fpir``: the share of strangers allowed a name when calibrating "unknown" (1%).
    * ``budget_minutes``: time for ``auto`` / ``run`` to train candidates.
    * ``split_seed``: the split's shuffle seed, so a re-run gives the same split.
    """

    min_face: int = openset.MIN_FACE
    target_fpir: float = 0.01
    budget_minutes: float = 10.0
    split_seed: int = 0


DEFAULTS = Defaults()


# -- ingest --------------------------------------------------------------------------------------


@dataclass
class Ingest:
    """What :func:`ingest` did: the build result, and identity resolution's summary (None when the
    embedder is not installed: ``identity_note`` then says so and the largest-face rule stands)."""

    build: Any
    identities: Any = None
    identity_note: str = ""


def ingest(
    ws: Workspace,
    photos: Path,
    *,
    detector: str | None = None,
    margin: float | None = None,
    resolve: bool = True,
    prune: bool = False,
    scan: Any = None,
    contact_sheets: bool = True,
    progress: Progress | None = None,
    identity_progress: Progress | None = None,
) -> Ingest:
    """Find and crop the faces of ``photos/<person>/…``, decide which face is each folder's person,
    and rewrite the reports: the one "build" every front end runs (CLI ``build`` and ``run``, web
    uploads, :meth:`facelab.api.Workspace.build`).

    ``detector``/``margin`` default to what the workspace was built with (so a re-run processes
    only new photos), else the measured best. Raises :class:`facelab.build.PhotoRootError` /
    :class:`facelab.build.NestedFolders` before changing anything.
    """
    from facelab.build import build
    from facelab.identity import IdentityUnavailable, resolve_identities
    from facelab.reports import write_reports

    detector = detector or ws.setting("detector")
    if margin is None and ws.setting("crop_margin"):
        margin = float(ws.setting("crop_margin"))
    with write_lock(ws.root):
        result = build(photos, ws, detector=detector, margin=margin, progress=progress, prune=prune, scan=scan)
        outcome = Ingest(result)
        if resolve:
            try:
                outcome.identities = resolve_identities(ws, progress=identity_progress)
            except IdentityUnavailable as exc:
                outcome.identity_note = f"identity resolution skipped: {exc}"
        write_reports(ws)
        if contact_sheets:
            from facelab.contact import write_contact_sheets

            write_contact_sheets(ws)
    return outcome


def split(ws: Workspace, seed: int = DEFAULTS.split_seed) -> Any:
    """Split photos into train / val / test by photo, near-duplicates together."""
    from facelab.split import split_workspace

    with write_lock(ws.root):
        return split_workspace(ws, seed=seed)


# -- train and calibrate ----------------------------------------------------------------------------


def strangers_folder(ws: Workspace, given: Path | None = None) -> Path | None:
    """The strangers folder given (remembered for later runs), else the remembered one."""
    from facelab.auto import strangers_folder as remembered

    return remembered(ws, given)


def train_embedding(
    ws: Workspace,
    *,
    head: str = "prototype",
    name: str | None = None,
    faces: FaceSelection | str = FaceSelection.RESOLVED,
    strangers: Path | None = None,
    include_others: bool = False,
    target_fpir: float = DEFAULTS.target_fpir,
    progress: Progress | None = None,
    embedder: str | None = None,
) -> Path:
    """An embedding-track run (calibrated as it is trained) over ``embedder`` (default: dlib, the one
    measured best; see ``facelab verify --help`` for the others). Returns its folder."""
    from facelab.embed_track import train_embedding_run
    from facelab.embedders import DEFAULT_EMBEDDER

    with write_lock(ws.root):
        return train_embedding_run(
            ws,
            head=head,
            name=name,
            faces=faces,
            strangers=strangers_folder(ws, strangers),
            include_others=include_others,
            target_fpir=target_fpir,
            progress=progress,
            model=embedder or DEFAULT_EMBEDDER,
        )


def train_transfer(
    ws: Workspace,
    config: Any,
    *,
    name: str | None = None,
    strangers: Path | None = None,
    reporter: Any = None,
    resume: bool = False,
    overrides: dict | None = None,
    target_fpir: float = DEFAULTS.target_fpir,
    on_phase: Callable[[str], None] | None = None,
) -> Path:
    """A transfer (CNN) run, then its calibration (softmax threshold and embedding gate), so it can
    answer unknown. ``on_phase`` hears when training ends and calibration starts. Returns its folder.

    A ``metric`` run (``config.strategy``) is a face embedding calibrated as it is trained, on the
    same evidence :func:`calibrate` would use, so it is not calibrated twice."""
    from facelab.config import Strategy
    from facelab.transfer import train_workspace

    with write_lock(ws.root):
        folder = strangers_folder(ws, strangers)
        if on_phase is not None and config.strategy is Strategy.METRIC:
            on_phase("training the metric stage, then calibrating the unknown threshold")
        result = train_workspace(
            ws,
            config,
            name=name,
            reporter=reporter,
            resume=resume,
            overrides=overrides,
            strangers=folder,
            target_fpir=target_fpir,
        )
        if result.summary.get("track") != "metric":  # a metric run was calibrated as it was trained
            if on_phase is not None:
                on_phase("calibrating the unknown threshold")
            calibrate(ws, result.run_dir, strangers=folder, target_fpir=target_fpir)
    return result.run_dir


def calibrate(
    ws: Workspace, run_dir: Path, *, strangers: Path | None = None, target_fpir: float = DEFAULTS.target_fpir
) -> dict:
    """Set a run's unknown threshold (see :func:`facelab.auto.calibrate_run`); writes ``openset.json``."""
    from facelab.auto import calibrate_run

    with write_lock(ws.root):
        payload = calibrate_run(ws, run_dir, strangers_folder(ws, strangers), target_fpir)
        deployed = deployed_model_dir(Path(run_dir))
        if deployed != Path(run_dir):
            _copy_calibration(Path(run_dir), deployed)  # the deployed refit answers with the new threshold
        return payload


def evaluate(ws: Workspace, run_dir: Path, split_name: str = "test") -> dict:
    """Evaluate a run on a split (test by default); writes ``metrics.json`` and plots into the run."""
    from facelab.evaluate import evaluate_run

    return evaluate_run(run_dir, split=split_name, strangers=strangers_folder(ws), workspace=ws.root)


# -- deploy -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationCheck:
    """A run on the workspace's validation faces: ``miss_rate`` is the share of the people's faces
    not given their own name at the run's threshold (rejected as unknown or misnamed); None when
    the run cannot answer unknown or could not be scored."""

    run: str
    miss_rate: float | None
    faces: int
    open_set: bool
    note: str = ""

    def words(self) -> str:
        if self.miss_rate is None:
            return f"{self.run}: {self.note or 'not measured'}"
        return f"{self.run}: misses {100 * self.miss_rate:.1f}% of {self.faces} validation faces"


@dataclass
class Deployment:
    """What :func:`deploy` did. ``current`` is the run folder name now current (maybe unchanged)."""

    deployed: bool
    current: str | None
    reason: str
    candidate: ValidationCheck | None = None
    previous: ValidationCheck | None = None
    refit: str = ""
    notes: list[str] = field(default_factory=list)


def current_run(ws: Workspace) -> Path | None:
    """The current model's run folder (None when there is none or it was deleted)."""
    name = ws.setting(CURRENT_MODEL)
    return ws.runs_dir / name if name and (ws.runs_dir / name / "summary.json").is_file() else None


def deployed_model_dir(run_dir: Path) -> Path:
    """The folder recognition loads for a current run: its refit on every labelled face
    (``RUN/deployed``) when there is one, else the run itself."""
    refit = run_dir / DEPLOYED
    return refit if (refit / "summary.json").is_file() else run_dir


THRESHOLDS_SETTING = "unknown_thresholds"  # run name → the unknown threshold the user chose for it


def chosen_thresholds(ws: Workspace) -> dict[str, float]:
    """Every run's chosen unknown threshold (run name → value); a damaged setting counts as none."""
    import math

    try:
        data = json.loads(ws.setting(THRESHOLDS_SETTING) or "{}")
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float) and math.isfinite(v)}


def chosen_threshold(ws: Workspace, run: str) -> float | None:
    """The threshold the user chose for ``run`` (web app's slider), or None: the calibrated one.
    Every front end recognizing with the workspace's current model applies it."""
    return chosen_thresholds(ws).get(run)


def choose_threshold(ws: Workspace, run: str, value: float | None) -> None:
    """Choose ``value`` as ``run``'s unknown threshold (None: back to the calibrated one)."""
    with write_lock(ws.root):
        data = chosen_thresholds(ws)
        if value is None:
            data.pop(run, None)
        else:
            data[run] = float(value)
        ws.set_setting(THRESHOLDS_SETTING, json.dumps(data, sort_keys=True))


def current_model_key(ws: Workspace) -> tuple | None:
    """What can change the current model's answers without a restart, for callers that keep a loaded
    recognizer (the web app, :class:`facelab.api.Workspace`): which run is current, its deployed files
    being rewritten (re-deploy, recalibration), enrolments in the gallery, the detector, people
    renamed or deleted, and the threshold chosen for the run. None when there is no current model."""
    name = ws.setting(CURRENT_MODEL)
    if not name:
        return None
    run = deployed_model_dir(ws.runs_dir / name)
    stamps = tuple(
        (run / f).stat().st_mtime_ns if (run / f).exists() else 0 for f in ("summary.json", "openset.json", "head.npz")
    )
    gallery = ws.query("SELECT COUNT(*) AS n, COALESCE(MAX(id), 0) AS last FROM gallery")[0]
    return (
        name,
        stamps,
        gallery["n"],
        gallery["last"],
        ws.setting("detector"),
        ws.setting("person_shown"),
        chosen_threshold(ws, name),
    )


def split_trained_run(run_dir: Path) -> Path:
    """The run a refit was made from (its validation and test figures are that run's); else itself."""
    return run_dir.parent if run_dir.name == DEPLOYED and (run_dir.parent / "summary.json").is_file() else run_dir


def validation_miss_rate(ws: Workspace, run_dir: Path) -> ValidationCheck:
    """Score ``run_dir`` on the workspace's validation faces (the split as it is now)."""
    from facelab import openset
    from facelab.runs import load_model, read_summary

    run_dir = split_trained_run(run_dir)
    try:
        model = load_model(run_dir)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        return ValidationCheck(run_dir.name, None, 0, False, f"cannot be loaded ({exc})")
    if model.threshold is None:
        return ValidationCheck(run_dir.name, None, 0, False, "cannot answer unknown (closed set)")
    faces = read_summary(run_dir).get("faces", FaceSelection.RESOLVED)
    items = load_items(ws, "val", faces) or load_items(ws, "train", faces)
    if not items:
        return ValidationCheck(run_dir.name, None, 0, True, "no validation faces")
    scores = model.predict_items(items)
    decisions = openset.decide(scores, model.threshold, classes=model.classes)
    right = openset.named_right(decisions.index, model.classes, [item.person for item in items])
    return ValidationCheck(run_dir.name, 1.0 - float(np.mean(right)), len(items), True)


def deploy(
    ws: Workspace,
    run_dir: Path | str,
    *,
    force: bool = False,
    refit: bool = True,
    on_phase: Callable[[str], None] | None = None,
) -> Deployment:
    """Make ``run_dir`` the current model: always when ``force`` (the user chose it), else only if it
    is no worse than the current model on the same validation faces (see the module docstring).
    ``refit``: deploy a copy refit on every labelled face (see :func:`refit_on_all`); ``on_phase``
    hears before a refit starts (a CNN's takes a minute or more)."""
    run_dir = Path(run_dir)
    if not run_dir.is_absolute() and not run_dir.exists():
        run_dir = ws.runs_dir / run_dir
    if not (run_dir / "summary.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished run (no summary.json); see facelab runs {ws.root}")
    if run_dir.resolve().parent != ws.runs_dir.resolve():
        raise ValueError(f"{run_dir} is not a run of {ws.root} (its runs are in {ws.runs_dir})")
    with write_lock(ws.root):
        previous_dir = current_run(ws)
        candidate = validation_miss_rate(ws, run_dir)
        previous = validation_miss_rate(ws, previous_dir) if previous_dir is not None else None
        if force:
            reason = "chosen by the user"
        elif previous_dir is not None and split_trained_run(previous_dir) == split_trained_run(run_dir):
            return Deployment(False, previous_dir.name, "it is already the current model", candidate, previous)
        elif not candidate.open_set or candidate.miss_rate is None:
            return Deployment(
                False,
                previous_dir.name if previous_dir else None,
                f"{candidate.words()}; it would give every stranger a name, so it is not made current "
                f"without you (facelab use {ws.root} {run_dir.name})",
                candidate,
                previous,
            )
        elif previous is None or previous.miss_rate is None:
            reason = "there was no current model" if previous_dir is None else f"the current one {previous.note}"
        elif candidate.miss_rate <= previous.miss_rate + 1e-9:
            reason = f"no worse on the same validation faces ({candidate.words()}; {previous.words()})"
        else:
            return Deployment(
                False,
                previous_dir.name if previous_dir else None,
                f"worse on the same validation faces ({candidate.words()}; {previous.words()}); "
                f"kept {previous_dir.name if previous_dir else 'the current model'} — to use it anyway: "
                f"facelab use {ws.root} {run_dir.name}",
                candidate,
                previous,
            )
        run_dir = split_trained_run(run_dir)
        outcome = Deployment(True, run_dir.name, reason, candidate, previous)
        if refit:
            if on_phase is not None:
                on_phase(f"refitting {run_dir.name} on every labelled face")
            refitted, note = refit_on_all(ws, run_dir)
            if refitted is not None:
                outcome.refit = str(refitted.relative_to(ws.runs_dir))
            if note:
                outcome.notes.append(note)
        ws.set_setting(CURRENT_MODEL, run_dir.name)
    return outcome


def refit_on_all(ws: Workspace, run_dir: Path) -> tuple[Path | None, str]:
    """``RUN/deployed/``: an embedding run's head fit on every labelled face (train + val + test).

    Its threshold is the run's calibration; its ``summary.json`` names the run (``refit_of``), whose
    test figures stay the honest estimate. CNN runs: :func:`_refit_cnn`. Returns (None, why) when
    there is nothing to refit.
    """
    from facelab.embed_track import TRACK
    from facelab.imageio import write_bytes_atomic
    from facelab.runs import read_summary

    summary = read_summary(run_dir)
    target = run_dir / DEPLOYED
    if summary.get("track") in _REFITS:
        return _REFITS[summary["track"]](ws, run_dir)
    if summary.get("track") != TRACK:
        return _refit_cnn(ws, run_dir, summary)
    vectors = ws.embeddings(summary.get("embedder", "dlib"))
    with np.load(run_dir / "head.npz", allow_pickle=False) as data:
        classes = [str(c) for c in data["classes"]]
    index = {name: i for i, name in enumerate(classes)}
    items = [
        item
        for item in load_items(ws, None, summary.get("faces", FaceSelection.RESOLVED))
        if item.person in index and item.face_id in vectors and item.split in ("train", "val", "test")
    ]
    if not items:
        shutil.rmtree(target, ignore_errors=True)
        return None, "no labelled faces to refit on: deployed as trained"
    staging = _staging(run_dir, _REFIT_FILES)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        classes=np.array(classes),
        x=np.stack([vectors[item.face_id] for item in items]).astype(np.float32),
        y=np.array([index[item.person] for item in items], dtype=np.int64),
    )
    write_bytes_atomic(buffer.getvalue(), staging / "head.npz")
    by_split = _refit_summary(run_dir, summary, items, staging)
    _swap_in(staging, target)
    parts = " + ".join(f"{n} {name}" for name, n in by_split.items())
    return target, f"deployed refit on all {len(items)} labelled faces ({parts}); test figures are the run's own"


def _refit_metric(ws: Workspace, run_dir: Path) -> tuple[Path | None, str]:
    """``RUN/deployed/``: a metric run with its head (each person's faces' embeddings) over every
    labelled face, embedded by the run's own network — no training, seconds. Its threshold is the
    run's calibration; its test figures are the run's."""
    from facelab.metric_fit import RUN_FILES, write_head
    from facelab.metric_model import MetricModel
    from facelab.runs import read_summary

    summary = read_summary(run_dir)
    model = MetricModel(run_dir)
    index = {name: i for i, name in enumerate(model.classes)}
    items = [
        item
        for item in load_items(ws, None, summary.get("faces", FaceSelection.RESOLVED))
        if item.person in index and item.split in ("train", "val", "test")
    ]
    target = run_dir / DEPLOYED
    if not items:
        shutil.rmtree(target, ignore_errors=True)
        return None, "no labelled faces to refit on: deployed as trained"
    staging = _staging(run_dir, RUN_FILES)
    labels = np.array([index[item.person] for item in items], dtype=np.int64)
    write_head(staging, model.classes, model.embed_items(items), labels)
    by_split = _refit_summary(run_dir, summary, items, staging)
    _swap_in(staging, target)
    parts = " + ".join(f"{n} {name}" for name, n in by_split.items())
    return target, (
        f"deployed with every person's mean embedding over all {len(items)} labelled faces ({parts}); "
        "test figures are the run's own"
    )


# Tracks with a refit of their own (see refit_on_all): track → refit(ws, run_dir).
_REFITS: dict[str, Callable[[Workspace, Path], tuple[Path | None, str]]] = {"metric": _refit_metric}


def _refit_summary(run_dir: Path, summary: dict, items: list, staging: Path) -> dict[str, int]:
    """Write the refit's ``summary.json``: ``summary`` naming the run it was made from, whose figures
    stay the honest ones. Returns the labelled faces used per split."""
    from facelab.imageio import write_text_atomic

    by_split = {s: sum(item.split == s for item in items) for s in ("train", "val", "test")}
    summary |= {
        "refit_of": run_dir.name,
        "refit_faces": by_split,
        "figures_from": (
            f"{run_dir.name}: trained on the train split, validated and tested on photos it never saw; "
            "this copy is fit again on every labelled face for deployment and has no figures of its own"
        ),
    }
    write_text_atomic(json.dumps(summary, indent=2) + "\n", staging / "summary.json")
    return by_split


def _refit_cnn(ws: Workspace, run_dir: Path, summary: dict) -> tuple[Path | None, str]:
    """``RUN/deployed/``: a CNN run trained again, same recipe, on every labelled face for the number
    of epochs validation chose (single-phase strategies: feature extraction, fine-tuning). Its
    threshold and embedding gate are the run's; its test figures are the run's."""
    import dataclasses

    from facelab.config import Strategy, TrainConfig
    from facelab.transfer import NullReporter, fit

    target = run_dir / DEPLOYED
    config = TrainConfig.load(run_dir / "config.yaml")
    epochs = int(summary.get("best_epoch") or 0)
    if config.strategy is Strategy.TWO_STAGE or epochs < 1:
        shutil.rmtree(target, ignore_errors=True)
        return None, "deployed as trained on the train split (two-stage runs are not refit)"
    classes = set(json.loads((run_dir / "classes.json").read_text(encoding="utf-8")))
    items = [
        item
        for item in load_items(ws, None, summary.get("faces", FaceSelection.RESOLVED), config.include_others)
        if item.person in classes and item.split in ("train", "val", "test")
    ]
    pairs = [(item.crop_path, item.person) for item in items]
    staging = _staging(run_dir)
    # Exactly the epochs validation chose, no early stop; the "validation" pass sees the training
    # faces themselves, only so the loop can run (there is nothing left to hold out).
    recipe = dataclasses.replace(config, epochs=epochs, patience=0, offline_aug=0, name=None)
    fit(recipe, pairs, pairs, staging, reporter=NullReporter(), extra_summary={"workspace": str(ws.root)})
    _copy_calibration(run_dir, staging)
    refit = json.loads((staging / "summary.json").read_text(encoding="utf-8"))
    by_split = _refit_summary(run_dir, refit, items, staging)
    _swap_in(staging, target)
    parts = " + ".join(f"{n} {name}" for name, n in by_split.items())
    return target, (
        f"deployed trained again on all {len(items)} labelled faces ({parts}) for {epochs} epoch(s); "
        "test figures are the run's own"
    )


# -- auto -----------------------------------------------------------------------------------------


def auto(
    ws: Workspace,
    *,
    budget_minutes: float = DEFAULTS.budget_minutes,
    strangers: Path | None = None,
    target_fpir: float = DEFAULTS.target_fpir,
    progress: Progress | None = None,
    candidates: Any = None,
    on_phase: Callable[[str], None] | None = None,
) -> tuple[Any, Deployment]:
    """Train candidates within the budget, choose the best on validation, test it, then deploy it if
    it is no worse than the current model. Returns the :class:`facelab.auto.AutoOutcome` and the
    :class:`Deployment`."""
    from facelab.auto import CANDIDATES, auto_select

    with write_lock(ws.root):
        outcome = auto_select(
            ws,
            budget_minutes=budget_minutes,
            strangers=strangers_folder(ws, strangers),
            target_fpir=target_fpir,
            candidates=candidates or CANDIDATES,
            progress=progress,
            on_phase=on_phase,
        )
        deployment = deploy(ws, outcome.winner)
    return outcome, deployment


def describe(deployment: Deployment) -> list[str]:
    """Plain lines for a person: what is current now and why."""
    if deployment.deployed:
        lines = [f"now the current model: {deployment.current} ({deployment.reason})"]
    else:
        lines = [f"not made current: {deployment.reason}"]
    lines += deployment.notes
    return lines
