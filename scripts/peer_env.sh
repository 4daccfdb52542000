#!/usr/bin/env bash
# Create (or reuse) the virtual environment of the face_recognition peer that
# bench/bench_album.py runs side by side with facelab (issue #18).
#
#   scripts/peer_env.sh [VENV]      # default .bench/peer-venv (git-ignored)
#
# face_recognition 1.3.0 is installed --no-deps: its declared `dlib>=19.7` would build dlib from
# source (15+ minutes); dlib-bin is the same dlib, prebuilt. Everything comes from PyPI.
# Idempotent: reinstalls only when the pinned list below changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${1:-.bench/peer-venv}
PINS=(
    "face_recognition==1.3.0"
    "face_recognition_models==0.3.0"
    "dlib-bin==20.0.1.post1"
    "numpy<3"
    "Pillow"
    "Click>=6.0"
    # face_recognition_models 0.3.0 finds its files with pkg_resources, which setuptools 81 removed.
    "setuptools<81"
)
stamp="$VENV/.peer-installed"
want=$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
    exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
echo "peer: installing face_recognition into $VENV (first run ~1-2 min: its models are 100 MB)" >&2
pip install --upgrade pip
pip install --no-deps "${PINS[0]}"
pip install "${PINS[@]:1}"
"$VENV/bin/python" -c 'import importlib.metadata, face_recognition, dlib; print("peer ready: face_recognition", importlib.metadata.version("face_recognition"), "dlib", dlib.__version__)' >&2
echo "$want" > "$stamp"
