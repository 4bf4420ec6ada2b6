#!/usr/bin/env bash
# The GPU check (issue: backend-neutral training, the GPU run prepared), run on the lent
# GPU machine, which has JAX but no TensorFlow, Keras or nibabel:
#
#   here:   make gpu-prepare      wheels into .whl/, the shared model and the real 3D pair
#                                 into .device/ (both git-ignored; ../shared never travels)
#   there:  bash tools/gpu_check.sh "$OUT"   with .whl and .device carried
#
# Installs the carried wheels, runs the JAX backend tests on the GPU, then
# tools/bench_gpu.py (training step in three precisions, registration, peak memory, 200
# steps of vxm_tf.train at 128^3, the authors' model on the real pair): OUT/gpu.json and
# OUT/gpu.md (committed as bench/gpu.md). Every part has its own time limit; the whole
# runs in about 8 minutes.
set -u
OUT=${1:-bench}
mkdir -p "$OUT"
if ! python3 -c "import keras, nibabel" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "error: cannot install the wheels in .whl/"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/device.txt"
python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)" 2>&1 | tail -1 | tee -a "$OUT/device.txt"

echo "== JAX backend tests (GPU)"
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_layers.py tests/test_losses.py \
    tests/test_networks.py 2>&1 | tail -4 | tee "$OUT/tests.txt"

echo "== benchmark"
pretrained=()
if [ -f .device/vxm_dense_brain_T1_3D_mse.h5 ] && [ -d .device/neurite-oasis-3d ]; then
    pretrained=(--pretrained .device/vxm_dense_brain_T1_3D_mse.h5 --oasis .device/neurite-oasis-3d)
fi
timeout 400 python3 tools/bench_gpu.py --out "$OUT/gpu.json" --timeout 120 --steps 10 --warmup 2 "${pretrained[@]}" 2>&1 \
    | grep -v "^I0000\|^W0000\|WARNING: All log"
