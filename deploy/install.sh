#!/usr/bin/env bash
# Install the daemon and its test tools into .venv/ at the repo root, then fetch and convert the models
# (idempotent: a second run with everything in place takes a second or two).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# Pinned to the versions the tests ran with (deploy/constraints.txt); the ranges in pyproject.toml stay open.
.venv/bin/python -m pip install --quiet -c deploy/constraints.txt -e '.[test]'
.venv/bin/skeletond models fetch
