#!/usr/bin/env bash
# One lease, one script: checks and times the Triton kernels and the sampler on a CUDA card.
# Run from the repository root on the GPU machine: `bash benchmarks/gpu_all.sh`.
# Each part has its own time limit so that one slow part cannot eat the other's numbers.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/reversalkit_gpu}"; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/card.txt"
timeout "${KERNELS_LIMIT:-230}" python3 -m benchmarks.gpu_kernels 2>&1 | tee "$OUT/kernels.log"
echo "gpu_kernels exit: ${PIPESTATUS[0]}"
timeout "${ENGINE_LIMIT:-230}" python3 -m benchmarks.gpu_engine 2>&1 | tee "$OUT/engine.log"
echo "gpu_engine exit: ${PIPESTATUS[0]}"
