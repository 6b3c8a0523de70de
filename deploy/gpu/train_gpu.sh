#!/usr/bin/env bash
# One GPU segment of about 9 minutes: 45 s of batched-start timing (adaptive issue), then training (issue 11): run from the repository root on a lent GPU
# machine, with nothing but that machine's PyTorch and this working tree.
#   OUT=/path/out bash deploy/gpu/train_gpu.sh [extra models.train_gpu options, e.g. --init models/weights/gpu]
# It simulates the data on the GPU (physics.simulate_torch), trains a w=0.5 UNet in bf16 until the budget is
# spent, and writes int8 weight shards, the learning curve, a summary and a log under $OUT. A full resumable
# state stays in runs/gpu_state (kept between calls while the machine is held); a later segment resumes from
# it, or from shards brought back (--init FOLDER). PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT to the folder that comes back}"
PY="${PYTHON:-python3}"
BUDGET="${BUDGET_S:-450}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
INFO=$("$PY" -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__)")
echo "$INFO"
# the adaptive issue's batched random starts on CUDA (item 4), at most 45 s, before the training segment
if [[ "$INFO" == *"cuda True"* ]]; then
  timeout 45 "$PY" bench/batch_starts.py --device cuda --size 64 --nb-run 8 --batches 1,8 --rounds 2 --no-doc \
    > "$OUT/batch_starts_cuda.txt" 2>&1 || echo "batch_starts: did not finish (see $OUT/batch_starts_cuda.txt)"
fi
exec "$PY" -m models.train_gpu --out "$OUT" --budget-s "$BUDGET" "$@"
