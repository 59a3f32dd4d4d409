#!/usr/bin/env bash
# The main job on the built-in synthetic cohort: sets up .venv, then runs `attrivae demo`.
# Extra arguments go to `attrivae demo` (e.g. --out DIR --n 400).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/attrivae demo "$@"
