#!/usr/bin/env bash
# Copy the run records (results.json only: no checkpoints, networks or W&B files) of every run
# below SRC into DEST/<run folder>/, where the reports read them and git keeps them.
#   bash sweeps/collect.sh SRC DEST
set -euo pipefail
SRC=${1:?usage: bash sweeps/collect.sh SRC DEST}; DEST=${2:?usage: bash sweeps/collect.sh SRC DEST}
find "$SRC" -name results.json -not -path "*/wandb/*" | while read -r f; do
  d=$DEST/$(basename "$(dirname "$f")")
  mkdir -p "$d" && cp "$f" "$d/results.json"
done
