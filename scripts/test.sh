#!/usr/bin/env bash
# Set up, then run the whole test suite (starts its own Prefect, S3 and Label Studio servers
# on 127.0.0.1; Label Studio comes from its own venv, .venv-ls).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_labelstudio.sh
bash scripts/setup_browser.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
# Lint and type-check every package first (configuration in pyproject.toml).
.venv/bin/ruff check .
.venv/bin/mypy
# Two workers (pytest-xdist): much of the suite waits on servers and subprocesses, so two
# share 2 cores well (12.6 min instead of 17.9 here). Each test file runs whole on one worker
# and the Label Studio files share one (tests/conftest.py); pass -n 0 to run in one process.
exec .venv/bin/python -m pytest -q -n 2 --dist loadgroup "$@"
