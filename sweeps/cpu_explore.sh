#!/usr/bin/env bash
# The exploration behind docs/methods.md "The remedies" (docs/results.md): one run per remedy, all at a
# FLOPs target of 50% on the CPU preset (VGG-16 x0.25, 4 epochs, real CIFAR-100, seed 0), in the
# order they were tried. The first five ran before the budget's freeze existed (budget.freeze=null
# reproduces them). Report: docs/results/cpu_explore (one row per folder).
#   bash sweeps/cpu_explore.sh DATA_DIR [OUT]        (OUT default: runs)
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:?usage: bash sweeps/cpu_explore.sh DATA_DIR [OUT]}
OUT=${2:-runs}/cpu_explore
export WANDB_MODE=${WANDB_MODE:-offline}
run() {  # run NAME overrides...
  local dir=$OUT/$1; shift
  [ -f "$dir/results.json" ] && return 0
  python run.py experiment=cpu_cifar100 dataset.root="$D" trainer.progress=false hydra.run.dir="$dir" \
    "$@"
}
G="target_flops=0.5 gamma=1e-3"   # the target, and the gamma where the budget controller starts
STE="binarizer=threshold binarizer.estimator=clipped"
POL="penalty=polarization optimizer.gates.upper=1"
# no freeze: the controller runs to the end
run b05_l1_r $G budget.freeze=null model.gate_position=relu                               # SSS's L1, gate after the ReLU
run b05_pol $G budget.freeze=null $POL model.bn_weight=false                             # polarization, gate in batch norm
run b05_pol_r $G budget.freeze=null $POL model.bn_weight=false model.gate_position=relu    # polarization after the ReLU
run b05_ste_r $G budget.freeze=null $STE model.gate_init=0.6 model.gate_jitter=0.02 model.gate_position=relu
run b05_hc_r target_flops=0.5 budget.freeze=null gamma=0.03 binarizer=hard_concrete penalty=l0 model.gate_init=2 model.gate_position=relu
# the architecture frozen at 60% of the run (budget.freeze=0.6, the default from here on)
run pol_fz $G $POL model.bn_weight=false model.gate_position=relu
run pol_fz_early $G $POL model.bn_weight=false model.gate_position=relu budget.ramp=0.25 budget.freeze=0.3
run pol_fz_fw $G $POL model.bn_weight=false model.gate_position=relu penalty.flops_weighted=true   # = method=sss
run ste_fz $G $STE model.gate_init=0.6 model.gate_jitter=0.02 model.gate_position=relu
run ste_lr $G $STE model.gate_init=0.6 model.gate_jitter=0.02 model.gate_position=relu optimizer.gates.lr=0.005
run ste_fz_fw $G $STE model.gate_init=0.6 model.gate_jitter=0.02 model.gate_position=relu penalty.flops_weighted=true
run ste_pol $G $STE $POL model.gate_position=relu
# is it the architecture or the training? b05_pol_r's widths trained from scratch
run scr_polr method=scratch_e arch.run=$OUT/b05_pol_r
# binary gates lag a budget ramp that ends at 50% of the run, and the freeze's forced cut does the
# rest (docs/results.md, gamma windows): the same budget as binary_f0.37_s0 with the ramp ending at 30%
run bin_f037_ramp03 method=binary target_flops=0.37 budget.ramp=0.3

bash sweeps/collect.sh "$OUT" docs/runs/cpu_explore
python -m gated_pruning.reports.compare cpu_explore docs/runs/cpu_explore --label dir --page docs/results.md
