#!/usr/bin/env bash
# Fine-tune the authors' pretrained 3D model on the lent GPU machine (JAX, no TensorFlow):
# semi-supervised (image similarity + Grad + soft Dice of the seg35 labels) on T1-like
# subjects rendered at full resolution (160x192x224) from the SynthSeg label maps aligned to
# neurite-OASIS (tools/synth_from_labels.py). No real scan is used in training; the result
# is scored on the real pair afterwards, here, by make oasis3d-report.
#
#   here:   make gpu-prepare GPU_TRAINING=1    (label maps and the 2D intensity subjects too)
#   there:  bash tools/gpu_finetune.sh "$OUT" [seconds]   with .whl and .device carried
#
# Everything ends within [seconds] (default 300): training stops at that deadline, keeping
# its last completed epoch's checkpoints. OUT/finetune/ receives best.keras, config.json,
# history.csv and timing.json (the device tool brings back 8 files at most).
set -u
OUT=${1:-runs}
BUDGET=${2:-300}
if ! python3 -c "import keras, nibabel" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "error: cannot install the wheels in .whl/"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
start=$(date +%s)
python3 tools/synth_from_labels.py --label_dir .device/synthseg-label-maps \
    --reference .device/neurite-oasis-3d/OASIS_OAS1_0001_MR1 \
    --intensity_dir .device/neurite-oasis-2d --out_dir /tmp/synth3d-full \
    --target_shape 160,192,224 --renders 4 --val_maps 2 --workers 16 | tail -2 || exit 1
echo "rendered in $(( $(date +%s) - start )) s"
timeout $(( BUDGET - $(date +%s) + start )) python3 -m vxm_tf.train --dataset=cache --data_dir=/tmp/synth3d-full \
    --train=72 --val=8 --test=0 --val_pairs=4 \
    --init_model=.device/vxm_dense_brain_T1_3D_mse.h5 --similarity=ncc --lambda=1 \
    --seg_weight=1 --lr=1e-4 --epochs=8 --steps_per_epoch=150 --precision=auto --verbose=2 \
    --model_dir="$OUT/finetune" 2>&1 | grep -v "^I0000\|^W0000\|WARNING: All log"
echo "exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
rm -f "$OUT/finetune/last.keras" "$OUT/finetune/model.keras" "$OUT/finetune/state.json" \
    "$OUT/finetune/versions.json"
