#!/usr/bin/env bash
# The prepared GPU check of the paper scale: ViT-B/32 with random weights at 224 on synthetic data (no
# internet), the poisoned fine-tune step (bf16 autocast) and evaluation, with 1 process and then with one
# process per GPU under torchrun. A few minutes; prints one summary line, and each run appends a JSON line
# to benchmarks/results/paper-gpu.jsonl.
#
#     bash benchmarks/paper_gpu.sh            # N = every visible GPU
#     N=2 bash benchmarks/paper_gpu.sh
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-$( [ -x ../.venv/bin/python ] && echo ../.venv/bin/python || echo python3 )}
N=${N:-$($PY -c "import torch; print(max(1, torch.cuda.device_count()))")}
ARGS=${ARGS:-}   # e.g. ARGS="--batch 256 --steps 50"
one=$(timeout 240 $PY paper_scale.py gpu $ARGS | tail -1)
many=$one
if [ "$N" -gt 1 ]; then
  many=$(timeout 240 $PY -m torch.distributed.run --standalone --nproc-per-node "$N" paper_scale.py gpu $ARGS | tail -1)
fi
$PY - "$one" "$many" <<'PYEOF'
import json, sys
one, many = (json.loads(a) for a in sys.argv[1:3])
print(f"paper-gpu: {one['device']} | 1 process: train {one['train_images_per_s']:.0f} img/s, eval "
      f"{one['eval_images_per_s']:.0f} img/s, peak {one['peak_gpu_gib_rank0']:.1f} GiB | {many['world_size']} "
      f"processes: train {many['train_images_per_s']:.0f} img/s ({many['train_images_per_s'] / one['train_images_per_s']:.2f}x), "
      f"eval {many['eval_images_per_s']:.0f} img/s | global batch {one['global_batch']}")
PYEOF
