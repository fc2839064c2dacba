#!/usr/bin/env bash
# The paper-scale recipe on one GPU, in one command: data, speed ratios, throughput, then the dense
# network and SSS with the paper's 160-epoch recipe (python run.py experiment=paper ...).
#   bash benchmarks/gpu.sh [DATA_DIR] [EPOCHS] [METHODS]
# DATA_DIR holds cifar100.npz, or the parts of one made by `python benchmarks/stage_data.py split`
# (for a machine that takes at most 64 MiB a transfer: carry DATA_DIR/parts one part a call, then
# run this). EPOCHS (default 160) shortens the runs; METHODS (default dense,sss_paper) is a
# comma-separated list of conf/method/ presets, run as one multirun.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data}
EPOCHS=${2:-160}
METHODS=${3:-dense,sss_paper}
if [ ! -f "$DATA/cifar100.npz" ] && [ -d "$DATA/parts" ]; then
  python benchmarks/stage_data.py join "$DATA/parts" "$DATA/cifar100.npz"
fi
pip install -q -e . 2>&1 | tail -1 || true
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python benchmarks/speed.py --device cuda --width 1.0 --batch 128 --reps 30 --only step --only prune
python benchmarks/throughput.py --device cuda --batch 128 512 --compile 0 1
WANDB_MODE=${WANDB_MODE:-offline} python run.py -m experiment=paper method="$METHODS" dataset.root="$DATA" \
  trainer.epochs="$EPOCHS" trainer.channels_last=true trainer.amp=true trainer.compile=true \
  trainer.progress=false hydra.sweep.dir=outputs/gpu-paper
python -m gated_pruning.evidence gpu_paper outputs/gpu-paper --out outputs/gpu-paper/report
