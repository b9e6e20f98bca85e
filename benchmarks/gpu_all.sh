#!/usr/bin/env bash
# Checks and times the Triton kernels and the sampler on a CUDA card, then runs a small study there
# end to end. Run from the repository root on the GPU machine: `bash benchmarks/gpu_all.sh`.
# Each part has its own time limit (KERNELS_LIMIT, ENGINE_LIMIT, STUDY_LIMIT; defaults 190, 200 and
# 150 s), so a slow part cannot keep the others from reporting.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/reversalkit_gpu}"; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/card.txt"
timeout "${KERNELS_LIMIT:-190}" python3 -m benchmarks.gpu_kernels 2>&1 | tee "$OUT/kernels.log"
echo "gpu_kernels exit: ${PIPESTATUS[0]}"
timeout "${ENGINE_LIMIT:-200}" python3 -m benchmarks.gpu_engine --budget "$(( ${ENGINE_LIMIT:-200} - 15 ))" 2>&1 | tee "$OUT/engine.log"
echo "gpu_engine exit: ${PIPESTATUS[0]}"
# A small tiny-preset study on the card (M1 + two rounds of each method): bf16 weights with
# autocast in training, the engine's KV cache released before each training step, the Triton
# sampler and the shared-prompt DPO forward, end to end. (SBERT off: its model package may be absent.)
RUN=/tmp/reversalkit_gpu_study  # checkpoints stay on the machine; results and report go to $OUT
timeout "${STUDY_LIMIT:-150}" python3 -m reversalkit.cli study --preset tiny --out "$RUN" --fresh \
  --set device=cuda --set iterations=3 --set task_options.train_size=600 --set sample_size=100 \
  --set test_size=60 --set ood_size=60 --set samples_per_problem=4 --set eval_samples=4 "--set" "pass_k=[1,2,4]" \
  --set sbert_model=none --set bootstrap=100 --set m1_train.max_steps=150 --set progress=false 2>&1 \
  | tail -40 | tee "$OUT/study.log"
echo "study exit: ${PIPESTATUS[0]}"
cp "$RUN/results.json" "$RUN/manifest.json" "$RUN/study.log" "$RUN/report/report.md" "$OUT/" 2>/dev/null || true
