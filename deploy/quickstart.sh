#!/usr/bin/env bash
# One command on a fresh machine: install into .venv/, fetch and convert the models, start the daemon.
# Extra arguments go to `skeletond serve` (for example --mqtt mqtt://127.0.0.1:1883).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install.sh
exec .venv/bin/skeletond serve "$@"
