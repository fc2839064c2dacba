#!/usr/bin/env bash
# The study in the near-converged CPU regime (experiment=cpu_converged: VGG-16 x0.25, real
# CIFAR-100, 5,000 training images held out for validation), in stages, each a list of multirun
# commands. hydra/launcher=joblib packs the jobs of a command two at a time, one thread each, on a
# 2-core machine. A job whose record exists (under OUT, or committed under docs/runs/converged) is
# not run again, so the script can be stopped and started again at any point.
#   bash sweeps/cpu_converged.sh DATA_DIR STAGE [OUT]     (STAGE: recipe curve budget study all)
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:?usage: bash sweeps/cpu_converged.sh DATA_DIR STAGE [OUT]}
STAGE=${2:?usage: bash sweeps/cpu_converged.sh DATA_DIR STAGE [OUT]}
OUT=${3:-runs/converged}
DOCS=docs/runs/converged
export WANDB_MODE=${WANDB_MODE:-offline}

done_() {  # done_ NAME: a record of run NAME exists
  [ -f "$DOCS/$1/results.json" ] && return 0
  compgen -G "$OUT/*/$1/results.json" > /dev/null
}

cell() {  # cell NAME KEY VALUES OVERRIDES...: one multirun over the VALUES of KEY whose run is not done;
          # NAME holds a % where the value goes (dense_e%_s0, sss_f0.5_s%)
  local name=$1 key=$2 values=$3 todo=() v
  shift 3
  for v in ${values//,/ }; do done_ "${name//%/$v}" || todo+=("$v"); done
  [ ${#todo[@]} -eq 0 ] && return 0
  python run.py -m experiment=cpu_converged dataset.root="$D" trainer.progress=false hydra/launcher=joblib \
    "$@" "$key=$(IFS=,; echo "${todo[*]}")" "hydra.sweep.dir=$OUT/$(date +%Y%m%d-%H%M%S)-${name//%/x}" \
    "hydra.sweep.subdir=${name//%/\${$key\}}"
}

cut() {  # cut SOURCE F METHOD CRITERION: cut a finished run to F of its FLOPs, fine-tune 2 epochs
  local src=$1 f=$2 method=$3 crit=$4 seed=${1##*_s}
  done_ "${method}_f${f}_s$seed" && return 0
  local from=$DOCS/$src
  [ -f "$from/model.pt" ] || from=$(dirname "$(compgen -G "$OUT/*/$src/results.json" | head -1)")
  python -m gated_pruning.prune "$from" --target-flops "$f" --criterion "$crit" --finetune-epochs 2 \
    --method "$method" --data-root "$D" --out "$OUT/cuts/${method}_f${f}_s$seed"
}

stage_recipe() {  # the recipe for the dense network at 8 epochs, chosen on val (seed 0): r1 is
  # cpu_cifar100's (lr 0.05, no warm-up, no smoothing; seeds 0, 1, also in float32: the bf16 check),
  # r2 the preset's (lr 0.1, 1 epoch of warm-up, label smoothing 0.1), r3 r2 at batch 256 and lr 0.2
  cell 'r1_amp%_s0' trainer.amp True,False method=dense trainer.epochs=8 optimizer.lr=0.05 \
    optimizer.warmup_epochs=0 trainer.label_smoothing=0.0 seed=0
  cell 'r1_amp%_s1' trainer.amp True,False method=dense trainer.epochs=8 optimizer.lr=0.05 \
    optimizer.warmup_epochs=0 trainer.label_smoothing=0.0 seed=1
  cell 'r2_b%_s0' dataset.batch_size 128 method=dense trainer.epochs=8 seed=0
  cell 'r3_b%_s0' dataset.batch_size 256 method=dense trainer.epochs=8 optimizer.lr=0.2 seed=0
}

stage_curve() {  # the dense network's val top-1 against epochs, recipe r2 (the preset's), seed 0
  cell 'dense_e%_s0' trainer.epochs 32,4,16 method=dense seed=0
}

stage_budget() {  # binary gates in the regime, seed 0, chosen on val: where fixed gammas land, and
  # the budget at a target of 0.37: as before (ramp to 50% of the run, freeze at 60%) and with the
  # freeze at the target as soon as the ramp is over, reopening an overshoot (ramps to 50% and 30%)
  cell 'binary_g%_s0' gamma 1e-4,2e-4,4e-4,8e-4 method=binary seed=0
  cell 'binary_f0.37_ramp%_fot_s0' budget.ramp 0.5,0.3 method=binary target_flops=0.37 \
    budget.freeze_on_target=true budget.reopen=true seed=0
  cell 'binary_f0.37_s%' seed 0 method=binary target_flops=0.37
}

case $STAGE in
  recipe) stage_recipe ;;
  curve) stage_curve ;;
  budget) stage_budget ;;
  *) echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
