#!/usr/bin/env bash
# The paper-scale recipe on one GPU, in one command: data, speed ratios, throughput, then the dense
# network and SSS with the paper's 160-epoch recipe (python run.py experiment=paper ...).
#   bash benchmarks/gpu.sh [DATA_DIR] [EPOCHS] [METHODS]
# DATA_DIR holds cifar100.npz, or the parts of one made by `python benchmarks/stage_data.py split`
# (for a machine that takes at most 64 MiB a transfer: carry DATA_DIR/parts one part a call, then
# run this). EPOCHS (default 160) shortens the runs; METHODS (default dense,sss_paper) is a
# comma-separated list of conf/method/ presets, run as one multirun.
# SMOKE=1 runs every stage at toy size on the CPU (width 1/16, a few steps, 1 epoch of a 512-image
# subset, no compile): what tests/test_gpu_path.py runs, so the script is known to work before a
# GPU is spent on it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the scripts import gated_pruning, installed or not
DATA=${1:-data}
EPOCHS=${2:-160}
METHODS=${3:-dense,sss_paper}
if [ "${SMOKE:-0}" = 1 ]; then
  DEVICE=cpu; WIDTH=0.0625; BATCH=16; REPS=2; EPOCHS=1
  TRAIN="model.width=$WIDTH dataset.train_size=512 dataset.test_size=256 dataset.batch_size=64"
else
  DEVICE=cuda; WIDTH=1.0; BATCH=128; REPS=30
  TRAIN="trainer.channels_last=true trainer.amp=true trainer.compile=true"
fi
if [ ! -f "$DATA/cifar100.npz" ] && [ -d "$DATA/parts" ]; then
  python benchmarks/stage_data.py join "$DATA/parts" "$DATA/cifar100.npz"
fi
[ "${SMOKE:-0}" = 1 ] || { pip install -q -e . 2>&1 | tail -1 || true; }
[ "${SMOKE:-0}" = 1 ] || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python benchmarks/speed.py --device $DEVICE --width $WIDTH --batch $BATCH --reps $REPS --only step --only prune
if [ "${SMOKE:-0}" = 1 ]; then
  python benchmarks/throughput.py --device cpu --width $WIDTH --batch $BATCH --compile 0 --steps 2 --rounds 1 --warmup 1
else
  python benchmarks/throughput.py --device cuda --batch 128 512 --compile 0 1
fi
OUTDIR=${OUTDIR:-outputs/gpu-paper}
WANDB_MODE=${WANDB_MODE:-offline} python run.py -m experiment=paper method="$METHODS" dataset.root="$DATA" \
  trainer.epochs="$EPOCHS" trainer.progress=false $TRAIN hydra.sweep.dir="$OUTDIR"
python -m gated_pruning.reports.compare gpu_paper "$OUTDIR" --out "$OUTDIR/report"
