#!/usr/bin/env bash
# The wheels the lent GPU image lacks, downloaded here for its Python, so that benchmarks/gpu.sh
# installs them there without a network (nothing outside the GPU machine can be reached from it).
# The image has torch, torchvision, numpy, tqdm, matplotlib, pyyaml, packaging (and tensorboard,
# onnxruntime); it lacks Hydra (hydra-core, omegaconf, antlr4's runtime), Torch-Pruning and the
# joblib launcher (and cloudpickle, which its process pool imports). All of them are pure Python: one
# wheel serves any platform.
#   WHEELS=.whl PY=3.12 bash benchmarks/wheels.sh     # then carry $WHEELS with the working tree
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}
PY=${PY:-3.12}
mkdir -p "$WHEELS"
python -m pip download -q --no-deps --only-binary=:all: --implementation py --python-version "$PY" --dest "$WHEELS" \
  'hydra-core>=1.3,<1.4' 'omegaconf>=2.3,<2.4' 'torch-pruning>=1.6,<1.7' 'hydra-joblib-launcher>=1.2' 'joblib>=1.2' \
  'cloudpickle>=2'  # joblib's process pool pickles with it
# antlr4's runtime (omegaconf's grammar) is published as a source archive only: built here into a wheel
python -m pip wheel -q --no-deps --wheel-dir "$WHEELS" 'antlr4-python3-runtime==4.9.3'
ls "$WHEELS"
