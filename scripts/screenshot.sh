#!/usr/bin/env bash
# Take docs/screenshot.png of the main job (`napari-vismae demo`) on a virtual X screen.
# Needs Xvfb (apt-get install xvfb xauth). Usage: bash scripts/screenshot.sh [OUT.png]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/screenshot.png}"
xvfb-run -a -s "-screen 0 1600x1000x24" python -m napari_vismae demo --screenshot "$out"
