#!/usr/bin/env bash
# Run the test suite: sets up .venv, then runs pytest on Testing/. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest Testing "$@"
