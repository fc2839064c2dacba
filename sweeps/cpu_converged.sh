#!/usr/bin/env bash
# The study in the 16-epoch CPU regime (experiment=cpu_converged: VGG-16 x0.25, real
# CIFAR-100, 5,000 training images held out for validation), in stages, each a list of multirun
# commands. hydra/launcher=joblib packs the jobs of a command two at a time, one thread each, on a
# 2-core machine. A job whose record exists (under OUT, or committed under its stage's folder of
# docs/runs/: converged for the study, epochs, selection, resnet56) is not run again, so the script
# can be stopped and started again at any point. Every job has one thread (threads=1), also a job
# that runs alone: the reports pair runs of one thread setting only.
#   bash sweeps/cpu_converged.sh DATA_DIR STAGE [OUT]
# STAGE: recipe curve budget study50 binary50 binary37 scratch50 side resnet56 controlled paper_gamma
# weights baselines width50 collect. SEEDS=0,1 runs the
# 50% stages' cells for those seeds only (the first two seeds of everything before any third).
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

interp() {  # interp KEY: how a job's folder name reads KEY's value (a group's choice, or a value)
  case $1 in method|model|binarizer|optimizer|penalty) echo "\${hydra:runtime.choices.$1}" ;; *) echo "\${$1}" ;; esac
}

cell() {  # cell NAME KEY VALUES [KEY2 VALUES2] -- OVERRIDES...: one multirun over the values (and their
          # product with VALUES2) whose run is not done. NAME holds a % where KEY's value goes and a @
          # where KEY2's goes (dense_e%_s0, %_f0.5_s@). Of a partly done product, the missing jobs run.
  local name=$1 key=$2 values=$3 key2="" values2="" v w todo
  shift 3
  if [ "$1" != "--" ]; then key2=$1 values2=$2; shift 2; fi
  shift
  local firsts=()
  for v in ${values//,/ }; do
    todo=()
    for w in ${values2:-_}; do for w in ${w//,/ }; do
      local n=${name//%/$v}; n=${n//@/$w}
      done_ "$n" || todo+=("$w")
    done; done
    [ ${#todo[@]} -gt 0 ] && firsts+=("$v:$(IFS=,; echo "${todo[*]}")")
  done
  [ ${#firsts[@]} -eq 0 ] && return 0
  local sub=${name//%/$(interp "$key")}
  [ -n "$key2" ] && sub=${sub//@/$(interp "$key2")}
  local runs=() i found
  for v in "${firsts[@]}"; do  # values whose missing KEY2 values are the same run as one product,
    found=0                    # so that the launcher packs them two at a time
    for i in "${!runs[@]}"; do
      if [ "${runs[$i]#*|}" = "${v#*:}" ]; then runs[$i]="${runs[$i]%%|*},${v%%:*}|${v#*:}"; found=1; break; fi
    done
    [ $found = 1 ] || runs+=("${v%%:*}|${v#*:}")
  done
  for r in "${runs[@]}"; do
    local sweep=("$key=${r%%|*}")
    [ -n "$key2" ] && sweep+=("$key2=${r#*|}")
    python run.py -m experiment=cpu_converged dataset.root="$D" trainer.progress=false hydra/launcher=joblib \
      threads=1 "$@" "${sweep[@]}" "hydra.sweep.dir=$OUT/$(date +%Y%m%d-%H%M%S)-${name//[%@]/x}" "hydra.sweep.subdir=$sub"
  done
}

cut() {  # cut SOURCE F METHOD CRITERION: cut a finished run to F of its FLOPs, fine-tune 2 epochs
  local src=$1 f=$2 method=$3 crit=$4 seed=${1##*_s}
  done_ "${method}_f${f}_s$seed" && return 0
  local from=$DOCS/$src
  [ -f "$from/model.pt" ] || from=$(dirname "$(compgen -G "$OUT/*/$src/results.json" | head -1)")
  python -m gated_pruning.reprune "$from" --target-flops "$f" --criterion "$crit" --finetune-epochs 2 --threads 1 \
    --method "$method" --data-root "$D" --out "$OUT/cuts/${method}_f${f}_s$seed"
}

stage_recipe() {  # the recipe for the dense network at 8 epochs, chosen on val (seed 0; records in
  # docs/runs/epochs, report docs/results/epochs: python -m gated_pruning.reports.curve): r1 is
  # cpu_cifar100's (lr 0.05, no warm-up, no smoothing; seeds 0, 1, also in float32: the bf16 check),
  # r2 the preset's (lr 0.1, 1 epoch of warm-up, label smoothing 0.1), r3 r2 at batch 256 and lr 0.2
  # (as run: r1 by one multirun, r2 and r3 as two single runs side by side with threads=1)
  DOCS=docs/runs/epochs OUT=$OUT/epochs
  cell 'r1_amp%_s0' trainer.amp True,False -- method=dense trainer.epochs=8 optimizer.lr=0.05 \
    optimizer.warmup_epochs=0 trainer.label_smoothing=0.0 seed=0
  cell 'r1_amp%_s1' trainer.amp True,False -- method=dense trainer.epochs=8 optimizer.lr=0.05 \
    optimizer.warmup_epochs=0 trainer.label_smoothing=0.0 seed=1
  cell 'r2_b%_s0' dataset.batch_size 128 -- method=dense trainer.epochs=8 seed=0
  cell 'r3_b%_s0' dataset.batch_size 256 -- method=dense trainer.epochs=8 optimizer.lr=0.2 seed=0
  collect
}

stage_curve() {  # the dense network's val top-1 against epochs, recipe r2 (the preset's), seed 0
  DOCS=docs/runs/epochs OUT=$OUT/epochs
  cell 'dense_e%_s0' trainer.epochs 32,4,16 -- method=dense seed=0
  collect
}

stage_budget() {  # binary gates in the regime, seed 0, chosen on val: where fixed gammas land, and
  # the budget at a target of 0.37: as before (ramp to 50% of the run, freeze at 60%) and with the
  # freeze at the target as soon as the ramp is over, reopening an overshoot (ramps to 50% and 30%)
  # (1e-4 and 2e-4 kept 63.8% and 36.1% of the FLOPs; 1.35e-4 interpolates 50% in log gamma;
  # 2e-4 was pruned again from its model.pt by the prune tool after its run failed at pruning;
  # records in docs/runs/selection: choices, not rows of the study)
  DOCS=docs/runs/selection OUT=$OUT/selection
  cell 'binary_g%_s0' gamma 0.0001,0.0002,0.000135 -- method=binary seed=0
  cell 'binary_f0.37_ramp%_fot_s0' budget.ramp 0.5,0.3 -- method=binary target_flops=0.37 \
    budget.freeze_on_target=true budget.reopen=true seed=0
  cell 'binary_f0.37_s%' seed 0 -- method=binary target_flops=0.37
  collect
}

collect() {  # the records of the stage's finished runs (under its OUT) into its DOCS (results.json only)
  local f d
  for f in $(compgen -G "$OUT/*/*/results.json"; compgen -G "$OUT/cuts/*/results.json"); do
    d=$DOCS/$(basename "$(dirname "$f")")
    [ -f "$d/results.json" ] || { mkdir -p "$d" && cp "$f" "$d/results.json"; }
  done
}

stage_study50() {  # the matched-FLOPs comparison at 50% of the FLOPs: dense (a fourth seed fills
  # the launcher's second slot), uniform scaling and SSS (method=sss, the budget), three seeds
  cell 'dense_s%' seed "${SEEDS:-0,1,2,3}" -- method=dense
  cell '%_f0.5_s@' method uniform,sss seed "${SEEDS:-0,1,2}" -- target_flops=0.5
  collect
}

stage_binary50() {  # binary gates at matched FLOPs: the budget (method=binary, its settings chosen by
  # stage_budget) against the fixed gamma that lands at the same FLOPs (1.25e-4 for 50% and 2e-4
  # for 37%, from stage_budget's gammas), the same seeds; the budget starts from that gamma
  cell 'binary_f0.5_budget%_s@' budget.enabled True,False seed "${SEEDS:-0,1,2}" -- method=binary target_flops=0.5 \
    gamma=0.000125
  collect
}

stage_binary37() {  # the same at 37% of the FLOPs (where the 4-epoch study's budget lost 3.2 points)
  cell 'binary_f0.37_budget%_s@' budget.enabled True,False seed 0,1 -- method=binary target_flops=0.37 \
    gamma=0.0002
  collect
}

stage_scratch50() {  # SSS's widths from scratch (Scratch-E, Scratch-B) and L1-norm cuts of the dense
  # network (Li et al., 2017) with 2 epochs of fine-tuning, three seeds
  cell '%_f0.5_s@' method scratch_e,scratch_b seed 0,1,2 -- "arch.run=$DOCS/sss_f0.5_s\${seed}"
  for s in 0 1 2; do cut "dense_s$s" 0.5 l1norm l1norm; done
  collect
}

stage_side() {  # 30% and 70% of the FLOPs: uniform, SSS and binary gates (budget), seed 0, then 1
  cell '%_f@_s0' method uniform,sss,binary target_flops 0.3,0.7 -- seed=0
  cell '%_f@_s1' method uniform,sss,binary target_flops 0.3,0.7 -- seed=1
  collect
}

stage_resnet56() {  # SSS on its own kind of network (issue 17): ResNet-56 at width 0.5, 50% of the FLOPs,
  # two seeds: channel gates (the blocks' inner channels), SSS's block gates, both; against dense,
  # uniform scaling and Scratch-E of the gates' widths. The short regime: 4 epochs of this recipe
  # (a ResNet-56 step costs 2.4x a VGG-16 x0.25 step here; 16 epochs x 12 runs would take ~10 hours)
  local R=(model=resnet56 model.width=0.5 trainer.epochs=4)
  DOCS=docs/runs/resnet56 OUT=$OUT/resnet56
  cell 'r56_%_s@' method dense,uniform seed 0,1 -- "${R[@]}" target_flops=0.5
  cell 'r56_sss_channel_s%' seed 0,1 -- "${R[@]}" method=sss target_flops=0.5 model.block_gates=false
  cell 'r56_sss_block_s%' seed 0,1 -- "${R[@]}" method=sss target_flops=0.5 model.inner_gates=false \
    model.block_gates=true
  cell 'r56_sss_both_s%' seed 0,1 -- "${R[@]}" method=sss target_flops=0.5 model.block_gates=true
  # block gates again, with the budget's reopen: the block-gate budget overshot its target (seed 0)
  cell 'r56_sss_block_reopen_s%' seed 0,1 -- "${R[@]}" method=sss target_flops=0.5 model.inner_gates=false \
    model.block_gates=true budget.reopen=true
  collect
  cell 'r56_scratch_e_both_s%' seed 0,1 -- "${R[@]}" method=scratch_e model.block_gates=true \
    "arch.run=$DOCS/r56_sss_both_s\${seed}"
  collect
}

stage_controlled() {  # issue 23: the gate kind as the only difference, and the published SSS. float
  # gates with every other setting of method=binary (method=float_gates), from binary50's start gamma,
  # so that binary50's budget runs (binary_f0.5_budgetTrue_s*) are the other arm; and sss_paper (L1
  # by APG, gates in batch norm) under the same budget and start gamma. Three seeds each, one multirun
  cell '%_f0.5_s@' method float_gates,sss_paper seed 0,1,2 -- target_flops=0.5 gamma=0.000125
  collect
}

stage_paper_gamma() {  # sss_paper with a fixed gamma: where fixed gammas land at 16 epochs, seed 0,
  # chosen on val among those in the window (records in docs/runs/selection); GAMMAS picks them
  DOCS=docs/runs/selection OUT=$OUT/selection
  cell 'sss_paper_g%_s0' gamma "${GAMMAS:-0.00025,0.00035}" -- method=sss_paper seed=0
  collect
}

stage_weights() {  # the dense networks of seeds 0 and 1 trained again for their weights (model.pt,
  # not in git: the cut baselines start from them); their records must equal dense_s0/s1's. Kept
  # under OUT/weights only
  local committed=$DOCS
  DOCS=$OUT/weights/none OUT=$OUT/weights
  cell 'dense_s%' seed 0,1 -- method=dense
  DOCS=$committed
}

cut_from() {  # cut_from RUN_DIR SEED F METHOD CRITERION [FLAGS...]: a cut of RUN_DIR's network to F of its FLOPs
  # by CRITERION, 2 epochs of fine-tuning, recorded as METHOD
  local src=$1 seed=$2 f=$3 method=$4 crit=$5
  shift 5
  done_ "${method}_f${f}_s$seed" && return 0
  python -m gated_pruning.reprune "$src" --target-flops "$f" --criterion "$crit" --finetune-epochs 2 --threads 1 \
    --method "$method" --data-root "$D" --out "$OUT/cuts/${method}_f${f}_s$seed" "$@"
}

stage_baselines() {  # issue 23: the comparisons of the SSS paper at 50% of the FLOPs, seeds 0 and 1, each from the
  # dense network of its seed (stage weights: the same runs as dense_s0/s1, their model.pt), as the L1-norm cuts
  # were: a cut and 2 epochs of fine-tuning, by Taylor importance (one-shot, and iterative: 4 rounds with an epoch
  # of fine-tuning between), ThiNet and LASSO; and ISTA on its batch-norm scales (Ye et al.): 4 epochs under the
  # budget at lr 0.01 (the trained network's lr, not a fresh run's 0.1), then 2 of fine-tuning. Two jobs at a time
  local s src w
  w=$(dirname "$(dirname "$(compgen -G "$OUT/weights/*/dense_s0/model.pt" | head -1)")")
  for s in 0 1; do
    src=$w/dense_s$s
    cut_from "$src" "$s" 0.5 taylor taylor & cut_from "$src" "$s" 0.5 thinet thinet & wait
    cut_from "$src" "$s" 0.5 lasso lasso & cut_from "$src" "$s" 0.5 taylor_iter taylor --rounds 4 --round-epochs 1 & wait
  done
  cell 'ista_bn_f0.5_s%' seed 0,1 -- method=ista_bn target_flops=0.5 trainer.epochs=4 optimizer.lr=0.01 \
    optimizer.warmup_epochs=0 prune.finetune_epochs=2 "model.weights=$w/dense_s\${seed}/model.pt"
  collect
}

stage_width50() {  # capacity: the same comparison at model.width=0.5 (4x the FLOPs of x0.25), seeds
  # 0 and 1: dense, uniform, SSS (method=sss) and binary gates (the controlled arm's settings)
  DOCS=docs/runs/width50 OUT=$OUT/width50
  cell 'dense_s%' seed 0,1 -- method=dense model.width=0.5
  cell '%_f0.5_s@' method uniform,sss seed 0,1 -- model.width=0.5 target_flops=0.5
  cell 'binary_f0.5_s%' seed 0,1 -- method=binary model.width=0.5 target_flops=0.5 gamma=0.000125
  collect
}

case $STAGE in
  recipe) stage_recipe ;;
  curve) stage_curve ;;
  budget) stage_budget ;;
  study50) stage_study50 ;;
  binary50) stage_binary50 ;;
  binary37) stage_binary37 ;;
  scratch50) stage_scratch50 ;;
  side) stage_side ;;
  resnet56) stage_resnet56 ;;
  controlled) stage_controlled ;;
  paper_gamma) stage_paper_gamma ;;
  weights) stage_weights ;;
  baselines) stage_baselines ;;
  width50) stage_width50 ;;
  collect) collect ;;
  *) echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
