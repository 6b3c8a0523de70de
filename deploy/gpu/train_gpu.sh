#!/usr/bin/env bash
# One GPU training segment of about 9 minutes (issue 11, item 4): run from the repository root on a lent GPU
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
BUDGET="${BUDGET_S:-510}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__)"
exec "$PY" -m models.train_gpu --out "$OUT" --budget-s "$BUDGET" "$@"
