#!/usr/bin/env bash
# One call on a lent GPU machine (e.g. the project's H200 device tool): GPU benchmark ratios,
# then one short real training run, all printed. Needs the CIFAR-100 npz in $DATA (default
# data/), carried in parts under 64 MiB and joined (see shared/data/README.md).
#   bash benchmarks/gpu.sh [DATA_DIR] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data}
EPOCHS=${2:-5}
pip install -q -e . 2>&1 | tail -1 || true
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python benchmarks/speed.py --device cuda --width 1.0 --batch 128 --reps 30 --only step --only prune
python - <<'PY'
import time, torch
from gated_pruning.models.vgg import build
# one full-width VGG-16 training step in bf16 + channels_last, images/s after warm-up
m = build(16, 1.0, 100).cuda().to(memory_format=torch.channels_last)
opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
x = torch.randn(512, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 100, (512,), device="cuda")
def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(m(x).float(), y)
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
for _ in range(10): step()
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(50): step()
torch.cuda.synchronize(); dt = (time.perf_counter() - t) / 50
print(f"VGG-16 train step, batch 512 bf16 channels_last: {1000*dt:.1f} ms, {512/dt:.0f} images/s, "
      f"160 epochs of 50k images ~ {160*50000/(512/dt)/60:.1f} min")
PY
WANDB_MODE=offline python run.py experiment=paper trainer.epochs="$EPOCHS" dataset.root="$DATA" \
  dataset.batch_size=512 optimizer.lr=0.2 trainer.channels_last=true trainer.amp=true \
  gamma=1e-4 hydra.run.dir=outputs/gpu-check
