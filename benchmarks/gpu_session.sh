#!/usr/bin/env bash
# The GPU checks of one lease on a GPU machine without a package index (../shared/gpu/README.md),
# in the order of their value, each with its own time limit, everything written to $OUT:
#   1. the device and the software (nvidia-smi, torch, CPU);
#   2. benchmarks/precision_speed.py on the GPU: fp32 against bf16 for the ensemble, and
#      benchmarks/sac_compile.py: the SAC update eager, compiled and as CUDA graphs, and
#      benchmarks/side_by_side_speed.py: 1, 2 and 5 seeds' updates side by side (issue 13);
#   3. benchmarks/gpu_check.py: the smoke suite, MBPO on InvertedPendulum-v5 for 1,000 steps and
#      PETS on the cart-pole for 50 steps on cuda, per phase, nothing beside it (issue 11);
#   4. at once: the same check on the CPU (4 threads), and benchmarks/precision_learning.py on
#      the GPU with a deadline: fp32 against bf16, 3 seeds of MBPO and PETS (issue 13), compared
#      at the last evaluation every run reached; then the check's cuda-against-cpu table.
# Usage there (with .whl/ carried):  bash benchmarks/gpu_session.sh [LEARNING_DEADLINE_S]
set -u -o pipefail
deadline=${1:-150}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
rm -rf /tmp/gpu_check /tmp/precision_learning  # a rerun on a warm machine starts afresh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD MUJOCO_GL=disable PYTHONUNBUFFERED=1
log=$OUT/session.log
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import torch, gymnasium, mujoco; print('torch', torch.__version__, 'cuda',
torch.version.cuda, torch.cuda.is_available(), 'gymnasium', gymnasium.__version__, 'mujoco',
mujoco.__version__)"
  grep -m1 'model name' /proc/cpuinfo; nproc
} >"$log" 2>&1
cat "$log"
t=$(date +%s)
timeout 60 python3 benchmarks/precision_speed.py --device cuda --forward-rows 1024,14286 \
  --out "$OUT/precision_speed_cuda.txt" 2>&1 | tee -a "$log"
echo "precision_speed: $(( $(date +%s) - t )) s" | tee -a "$log"
t=$(date +%s)
timeout 90 python3 benchmarks/sac_compile.py --device cuda --repeats 5 --updates 200 \
  --out "$OUT/sac_compile_cuda.txt" 2>&1 | grep -v '^W' | tail -n 8 | tee -a "$log"
echo "sac_compile: $(( $(date +%s) - t )) s" | tee -a "$log"
t=$(date +%s)
timeout 60 python3 benchmarks/side_by_side_speed.py --device cuda --seeds 1,2,5 --repeats 5 \
  --updates 200 --out "$OUT/side_by_side_cuda.txt" 2>&1 | tail -n 5 | tee -a "$log"
echo "side_by_side_speed: $(( $(date +%s) - t )) s" | tee -a "$log"
t=$(date +%s)
timeout 200 python3 benchmarks/gpu_check.py --devices cuda --out /tmp/gpu_check 2>&1 \
  | tee -a "$log"
echo "gpu_check cuda (nothing beside it): $(( $(date +%s) - t )) s" | tee -a "$log"
# The CPU half of the check (4 threads) beside the fp32/bf16 learning runs on the GPU (12
# processes): its returns are the comparison; its wall-clock was measured beside them.
t=$(date +%s)
(OMP_NUM_THREADS=4 timeout 240 python3 benchmarks/gpu_check.py --devices cpu \
  --out /tmp/gpu_check >"$OUT/gpu_check_cpu.log" 2>&1;
 echo "gpu_check cpu (4 threads, beside the learning runs): $(( $(date +%s) - t )) s" \
   >>"$OUT/gpu_check_cpu.log") &
timeout $(( deadline + 60 )) python3 benchmarks/precision_learning.py --device cuda --seeds 3 \
  --workers 12 --deadline "$deadline" --out /tmp/precision_learning 2>&1 | tail -n 30 \
  | tee -a "$log"
echo "precision_learning: $(( $(date +%s) - t )) s" | tee -a "$log"
cp /tmp/precision_learning/report.txt "$OUT/precision_learning.txt" 2>/dev/null
cp /tmp/precision_learning/evals.csv "$OUT/precision_learning_evals.csv" 2>/dev/null
wait
cat "$OUT/gpu_check_cpu.log"
python3 benchmarks/gpu_check.py --devices cuda,cpu --out /tmp/gpu_check --report-only 2>&1 \
  | tee "$OUT/gpu_check.txt"
tar czf "$OUT/runs.tar.gz" --exclude='checkpoint.pt' -C /tmp gpu_check precision_learning \
  2>/dev/null
ls -la "$OUT"
