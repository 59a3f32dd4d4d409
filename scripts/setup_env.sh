#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install AttriVAELib.
# torch is installed first and pinned, so pip never pulls a multi-GB CUDA build by accident;
# set ATTRIVAE_TORCH to choose another torch requirement (e.g. "torch==2.13.0" or a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ATTRIVAE_VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV" >&2
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.attrivae-installed"
want="$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  echo "[setup] installing torch and AttriVAELib into $VENV (first run: ~2 minutes)" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${ATTRIVAE_TORCH:-torch==2.13.0}" 2>&1 | grep -v "is ignored" >&2 || true
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,report]" 2>&1 | grep -v "is ignored" >&2 || true
  "$VENV/bin/python" -c "import torch, monai, SimpleITK, AttriVAELib" >&2
  echo "$want" > "$STAMP"
fi
