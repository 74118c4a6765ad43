#!/usr/bin/env bash
# The prepared GPU check: one short script for a machine with CUDA.
# Assumes a venv with torch (CUDA build) and the package installed; prints
# only (--no-doc), so the committed CPU result pages are not overwritten.
#   1. the tests marked gpu (CPU/GPU agreement to float32 tolerance);
#   2. dense K throughput on CUDA vs CPU (interaction_throughput.py);
#   3. a reduced torch_groups.py on CUDA, then the same on the CPU;
#   4. EK-FAC on the 1M-parameter CNN (cnn_groups.py: fit, score_groups,
#      Kronfluence, fewer refits) on CUDA, then the same on the CPU. The
#      K-FAC / EK-FAC CPU/GPU agreement is a gpu-marked test (step 1);
#   5. a larger language-model configuration of lm_selection.py (GPT-2 of
#      width 256 and 4 blocks, rank-8 LoRA on every block, EK-FAC, two
#      domains) on CUDA, when the fortunes corpus is there (FORTUNES_DIR,
#      default /usr/share/games/fortunes; apt-get install fortunes fortunes-min).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.cuda.get_device_name(0))"
"$PY" -m pytest -q -m gpu -p no:cacheprovider tests
"$PY" benchmarks/interaction_throughput.py --device cuda --no-doc
"$PY" benchmarks/interaction_throughput.py --device cpu --no-doc
small=(--n-train 2000 --n-refits 2 --no-doc)
"$PY" benchmarks/torch_groups.py --device cuda "${small[@]}"
"$PY" benchmarks/torch_groups.py --device cpu --threads 8 "${small[@]}"
cnn=(--lds-subsets 4 --group-refits 2 --no-trak --no-doc)
"$PY" benchmarks/cnn_groups.py --device cuda "${cnn[@]}"
"$PY" benchmarks/cnn_groups.py --device cpu --threads 8 "${cnn[@]}"
fortunes=${FORTUNES_DIR:-/usr/share/games/fortunes}
if [ -d "$fortunes" ]; then
  "$PY" benchmarks/lm_selection.py --device cuda --n-embd 256 --n-layer 4 \
    --lora-rank 8 --lora-blocks 0 1 2 3 --curvature ekfac --domains computers science
else
  echo "skipped lm_selection.py: no fortunes corpus at $fortunes"
fi
