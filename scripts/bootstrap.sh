#!/usr/bin/env bash
# Create (or reuse) .venv with everything facelab needs. Idempotent: it re-installs only
# when pyproject.toml or requirements-nodeps.txt changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.facelab-installed"
want=$(cat pyproject.toml requirements-nodeps.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/facelab" ]; then
    exit 0
fi
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "facelab needs Python >= 3.11")'
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
echo "facelab: installing into $VENV (first run takes a few minutes: torch is large)"
pip install --upgrade pip setuptools wheel
pip install -e '.[dev]'
pip install --no-deps -r requirements-nodeps.txt
# Browser tests drive Debian's Chromium (never a browser downloaded by a test tool). Installed when
# we may (root with apt); without it those tests skip and say why.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "facelab: installing Debian's chromium for the browser tests"
    (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }) \
        || echo "facelab: could not install chromium; browser tests will be skipped"
fi
echo "$want" > "$stamp"
echo "facelab: environment ready ($VENV)"
