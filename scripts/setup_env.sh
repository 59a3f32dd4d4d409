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
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,report,web]" 2>&1 | grep -v "is ignored" >&2 || true
  "$VENV/bin/python" -c "import torch, monai, SimpleITK, AttriVAELib" >&2
  echo "$want" > "$STAMP"
fi

# System libraries for `attrivae view` and its browser tests: EGL/Mesa (offscreen rendering on the server)
# and Debian's Chromium (driven by Playwright; no browser is ever downloaded). Installed only when missing.
if [ "$(uname -s)" = "Linux" ]; then
  missing=()
  libs="$( (ldconfig -p || /sbin/ldconfig -p) 2>/dev/null || true)"
  grep -q 'libEGL\.so\.1' <<<"$libs" || missing+=(libegl1)
  grep -q 'libEGL_mesa\.so\.0' <<<"$libs" || missing+=(libegl-mesa0)
  compgen -G "/usr/lib/*/dri/swrast_dri.so" >/dev/null || compgen -G "/usr/lib/*/dri/*_dri.so" >/dev/null \
    || compgen -G "/usr/lib/*/libgallium*.so" >/dev/null || missing+=(libgl1-mesa-dri)
  command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
      echo "[setup] installing ${missing[*]} (web viewer and its browser tests)" >&2
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    else
      echo "[setup] for attrivae view and its browser tests, install: apt-get install ${missing[*]}" >&2
    fi
  fi
fi
