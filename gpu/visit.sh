#!/usr/bin/env bash
# One visit to a bare, offline GPU machine (run from the repository root): install neuralpower there (its C++
# extension built in place, nothing downloaded), run the GPU tests, then `neuralpower campaign` in what is left
# of the budget. Everything the visit measured comes back as one archive.
#
#   BUDGET=450 OUT=/path/to/out bash gpu/visit.sh          (the device tool: command `bash gpu/visit.sh`)
#
# Writes $OUT/{visit.log,install.log,gpu-tests.xml,campaign.tar.gz}; campaign.tar.gz unpacks (tar xzf, in data/)
# to data/<the GPU model's folder>, the campaign's datasets with this visit's rows added. Every stage is time-boxed
# and a stage that fails does not stop the next. Needs what the GPU image has: python3 with torch, cupy,
# nvidia-ml-py, pytest, numpy, scipy, scikit-learn, pyarrow, scikit-build-core, pybind11, cmake and ninja.
set -u -o pipefail
export PYTHONUNBUFFERED=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 CMAKE_BUILD_PARALLEL_LEVEL=16
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
BUDGET=${BUDGET:-450}
T0=$(date +%s)
exec > >(tee -a "$OUT/visit.log") 2>&1
PY=${PY:-python3}
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
stage() { echo; echo "=== +$(( $(date +%s) - T0 ))s, $(left)s left: $*"; }

stage environment
nvidia-smi --query-gpu=name,uuid,driver_version,memory.total,power.limit,clocks.sm,clocks.max.sm --format=csv || true

stage "install (offline, editable, the C++ extension built here)"
if ! timeout 180 $PY -m pip install --no-deps --no-build-isolation --no-index -e . >"$OUT/install.log" 2>&1; then
  echo "install failed:"; tail -25 "$OUT/install.log"; exit 3
fi
$PY -c "import neuralpower._evaluator" || exit 3

stage "gpu tests: the sensor, the kernels against their references, the executors"
timeout -k 10 150 $PY -m pytest -m gpu -q -rfEs -p no:cacheprovider --junitxml="$OUT/gpu-tests.xml" \
  tests/test_gpu_sensor.py tests/test_gpu_kernels.py tests/test_gpu_executors.py
echo "pytest exit $?"

# The GPU model's folder under data/ (data/h200 for an NVIDIA H200): the datasets committed there by earlier visits
# travel with the working tree, so the campaign extends them; the archive holds the whole folder again.
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
FOLDER=$($PY -c "import sys; from neuralpower.campaign import gpu_folder; print(gpu_folder(sys.argv[1]))" "$GPU_NAME")
CAMPAIGN=${CAMPAIGN:-data/$FOLDER}
stage "campaign: torch, fp16 then fp32, into $CAMPAIGN"
MINUTES=$($PY -c "import sys; print(round(max(0.5, (int(sys.argv[1]) - 40) / 60), 2))" "$(left)")
timeout -s INT -k 20 $(( $(left) - 5 )) $PY -m neuralpower.cli campaign --executor torch --out "$CAMPAIGN" \
  --minutes "$MINUTES" --target-ms 10 --loops 3 --quiet
echo "campaign exit $?"
cp "$CAMPAIGN/campaign.tar.gz" "$OUT/" 2>/dev/null || tar czf "$OUT/campaign.tar.gz" -C "$(dirname "$CAMPAIGN")" \
  "$(basename "$CAMPAIGN")"
stage done
