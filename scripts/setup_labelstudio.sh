#!/usr/bin/env bash
# Create .venv-ls with the Label Studio server pinned by constraints-labelstudio.txt. Idempotent.
# The server gets its own venv because its pins conflict with the pipeline's (.venv holds only
# label-studio-sdk). It also leaves a migrated, empty template database in .venv-ls/template/,
# which lets a test server (tests/servers.py) start in seconds instead of ~30 s of migrations.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV=.venv-ls
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(cat constraints-labelstudio.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -c constraints-labelstudio.txt label-studio
  # Any command runs the migrations first; `version` then exits. No network, no telemetry.
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  if ! env -i PATH="$PATH" HOME="$work/home" LABEL_STUDIO_BASE_DATA_DIR="$work/data" \
      DJANGO_DB=sqlite COLLECT_ANALYTICS=false LATEST_VERSION_CHECK=false \
      SENTRY_DSN= FRONTEND_SENTRY_DSN= \
      "$VENV/bin/label-studio" version >"$work/migrate.log" 2>&1; then
    tail -n 40 "$work/migrate.log" >&2
    exit 1
  fi
  mkdir -p "$VENV/template"
  mv "$work/data/label_studio.sqlite3" "$VENV/template/label_studio.sqlite3"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
