#!/usr/bin/env bash
# The CPU study behind docs/results/cpu_study and docs/results/gamma_window: every run, in order,
# then the reports. Each run is one `python run.py experiment=cpu_cifar100 ...` (VGG-16 x0.25,
# 4 epochs of the real CIFAR-100, see docs/results.md); cuts of finished runs are one
# `python -m gated_pruning.reprune`. Runs are independent except where a cut or a scratch run
# reads an earlier run, so they can be spread over machines; on a 2-core machine, two at a time
# with OMP_NUM_THREADS=1 each did 1.4x the work of one at a time with two threads.
#   bash sweeps/cpu_study.sh DATA_DIR [OUT]        (OUT default: runs)
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:?usage: bash sweeps/cpu_study.sh DATA_DIR [OUT]}
OUT=${2:-runs}
export WANDB_MODE=${WANDB_MODE:-offline}

S=$OUT/cpu_study       # the matched-FLOPs comparison (and the dense network trained longer)
G=$OUT/gamma_window    # fixed-gamma runs
run() {  # run DIR overrides...: one training run into DIR (skipped when it finished before)
  local dir=$1; shift
  [ -f "$dir/results.json" ] && return 0
  python run.py experiment=cpu_cifar100 dataset.root="$D" trainer.progress=false hydra.run.dir="$dir" "$@"
}
cut() {  # cut SOURCE F METHOD CRITERION: cut a finished run to F of its FLOPs, fine-tune 1 epoch
  local src=$1 f=$2 method=$3 crit=$4 seed=${1##*_}
  [ -f "$S/${method}_f${f}_${seed}/results.json" ] && return 0
  python -m gated_pruning.reprune "$S/$src" --target-flops "$f" --criterion "$crit" \
    --finetune-epochs 1 --method "$method" --data-root "$D" --out "$S/${method}_f${f}_${seed}"
}

# the 50% point, seed 0 for every method, then more seeds
for s in 0 1 2; do
  run $S/dense_s$s method=dense seed=$s
  run $S/uniform_f0.5_s$s method=uniform target_flops=0.5 seed=$s
  run $S/sss_f0.5_s$s method=sss target_flops=0.5 seed=$s
  run $S/binary_f0.5_s$s method=binary target_flops=0.5 seed=$s
  cut dense_s$s 0.5 l1norm l1norm
  if [ $s = 0 ]; then
    run $S/slimming_s0 method=slimming gamma=8e-3 seed=0 prune.finetune_epochs=0
    cut slimming_s0 0.5 slimming gate
    run $S/scratch_e_f0.5_s0 method=scratch_e arch.run="$S/sss_f0.5_s0" seed=0
    run $S/scratch_b_f0.5_s0 method=scratch_b arch.run="$S/sss_f0.5_s0" seed=0
  fi
done
# 30% and 70%, seed 0
for f in 0.3 0.7; do
  run $S/uniform_f${f}_s0 method=uniform target_flops=$f seed=0
  run $S/sss_f${f}_s0 method=sss target_flops=$f seed=0
  run $S/binary_f${f}_s0 method=binary target_flops=$f seed=0
  cut dense_s0 $f l1norm l1norm
  cut slimming_s0 $f slimming gate
done
# Network Slimming with its published lambda (1e-4 for 160 epochs; 8e-3 above gives these 4 epochs
# the same total L1 displacement, lr x lambda x steps)
run $S/slimming_pub_s0 method=slimming gamma=1e-4 seed=0 prune.finetune_epochs=0
cut slimming_pub_s0 0.5 slimming_pub gate
# the gamma windows: fixed gamma, no budget (half-decade steps, then a point inside each edge's bracket)
for g in 3e-4 1e-3 1.5e-3 3e-3 1e-2 1.5e-2 3e-2; do
  run $G/sss_g$g method=sss gamma=$g
done
for g in 1e-4 1.5e-4 3e-4 1e-3 1.5e-3 3e-3; do
  run $G/binary_g$g method=binary gamma=$g
done
# the FLOPs budget at the FLOPs that binary gates kept at gamma 1e-3 (36.96%): budget vs fixed gamma
run $G/binary_f0.37_s0 method=binary target_flops=0.37 seed=0

bash sweeps/collect.sh "$S" docs/runs/cpu_study
bash sweeps/collect.sh "$G" docs/runs/gamma_window
python -m gated_pruning.reports.compare cpu_study docs/runs/cpu_study --page docs/results.md
python -m gated_pruning.reports.compare gamma_window docs/runs/gamma_window --page docs/results.md
