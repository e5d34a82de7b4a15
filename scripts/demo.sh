#!/usr/bin/env bash
# Set up, then run the main job on the embedded default: a local dataset root and Prefect's
# ephemeral mode. Generates a synthetic crowd batch, ingests it, prints the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
exec .venv/bin/hagrid demo "$@"
