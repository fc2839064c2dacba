#!/usr/bin/env bash
# The GPU work, in calls that each end inside the device tool's 10 minutes (docs/scaling.md, "The
# first GPU session", gives the whole sequence):
#   bash benchmarks/gpu.sh bench [DATA_DIR]                   speed ratios, operators, throughput (~3 min)
#   bash benchmarks/gpu.sh study [DATA_DIR] [EPOCHS] [METHODS] the 50% study's jobs side by side on the GPU
# DATA_DIR holds cifar100.npz, or the parts of one (`python benchmarks/stage_data.py split`): joined here.
# EPOCHS (default 160) and METHODS (default dense,uniform,sss,binary; seeds $SEEDS, default 0) shape the
# study (experiment=gpu_study: VGG-16, batch 1024, every job of the command at once, logger=none).
# No network and no `pip install -e .`: the project runs from this checkout on $PYTHON (default python3),
# with the wheels of $WHEELS (default .whl/, made by benchmarks/wheels.sh where a network is) installed by
# `pip install --no-index --no-deps --target .gpu-site`. SMOKE=1 runs every stage at toy size on the CPU
# (tests/test_gpu_path.py), so the script is known to work before a GPU is spent on it.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-all}
case $MODE in bench|study|all) shift || true ;; *) MODE=all ;; esac  # the older form: gpu.sh DATA EPOCHS METHODS
DATA=${1:-data}
EPOCHS=${2:-160}
METHODS=${3:-dense,uniform,sss,binary}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-.gpu-site}
case $SITE in /*) ;; *) SITE=$PWD/$SITE ;; esac
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the project from this checkout, installed or not
"$PYTHON" -c "import hydra, omegaconf, torch_pruning" || { echo "error: hydra-core, omegaconf or torch-pruning missing: \
run benchmarks/wheels.sh where a network is and carry $WHEELS (or pip install -e .)" >&2; exit 2; }
if [ "${SMOKE:-0}" = 1 ]; then
  DEVICE=cpu; WIDTH=0.0625; BATCH=16; REPS=2; EPOCHS=1
  TRAIN=(model.width=$WIDTH dataset.train_size=400 dataset.val_size=100 dataset.test_size=256 dataset.batch_size=64
         dataset.eval_batch_size=256 trainer.compile=false trainer.amp=false optimizer.weights.fused=null
         optimizer.weights.foreach=true optimizer.warmup_epochs=0 hydra.launcher.n_jobs=2)
else
  DEVICE=cuda; WIDTH=1.0; BATCH=128; REPS=30
  TRAIN=()
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
fi
if [ ! -f "$DATA/cifar100.npz" ] && [ -d "$DATA/parts" ]; then
  "$PYTHON" benchmarks/stage_data.py join "$DATA/parts" "$DATA/cifar100.npz"
fi
if [ "$MODE" != study ]; then
  "$PYTHON" benchmarks/speed.py --device $DEVICE --width $WIDTH --batch $BATCH --reps $REPS --only step --only prune
  "$PYTHON" benchmarks/ops.py --steps 2 --methods dense,binary
  if [ "${SMOKE:-0}" = 1 ]; then
    "$PYTHON" benchmarks/throughput.py --device cpu --width $WIDTH --batch $BATCH --compile 0 --steps 2 --rounds 1 --warmup 1
  else
    "$PYTHON" benchmarks/throughput.py --device cuda --batch 128 1024 --compile 0 1
  fi
fi
if [ "$MODE" != bench ]; then
  OUTDIR=${OUTDIR:-outputs/gpu-study}
  TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-2} "$PYTHON" run.py -m experiment=gpu_study \
    method="$METHODS" seed="${SEEDS:-0}" target_flops=0.5 dataset.root="$DATA" trainer.epochs="$EPOCHS" "${TRAIN[@]}" \
    hydra.sweep.dir="$OUTDIR" 'hydra.sweep.subdir=${hydra:runtime.choices.method}_s${seed}'
  "$PYTHON" -m gated_pruning.reports.compare gpu_study "$OUTDIR" --out "$OUTDIR/report"
fi
