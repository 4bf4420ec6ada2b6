#!/usr/bin/env bash
# 3D training on the lent GPU machine (JAX, no TensorFlow), on T1-like subjects rendered
# there from the SynthSeg label maps aligned to neurite-OASIS (tools/synth_from_labels.py).
# No real scan is used in training; the result is scored on the real pair afterwards, here
# (make synth3d-report / make oasis3d-report).
#
#   here:   make gpu-prepare GPU_TRAINING=1    (label maps and the 2D intensity subjects too)
#   there:  bash tools/gpu_train.sh MODE "$OUT" [seconds]   with .whl and .device carried
#
# MODE scratch:  the 3D issue's model from scratch at 128^3 (flags/synth3d.cfg, ncc.cfg,
#                synth3d_seg.cfg), 8 renders per map, 8 epochs of 1,000 steps.
#                reports/synth3d_128.md's model (runs/synth3d128-svf2) was trained in three
#                stages within one lease, each cut by its deadline:
#                  bash tools/gpu_train.sh scratch OUT1 275                  (4 epochs)
#                  SEED=1 bash tools/gpu_train.sh scratch OUT2 265 \
#                      --init_model=OUT1/scratch/best.keras --lr=2.5e-4 --epochs=6  (3 epochs)
#                  SEED=1 bash tools/gpu_train.sh scratch OUT3 215 \
#                      --init_model=OUT2/scratch/best.keras --lr=2.5e-4          (8 epochs)
#                the third on the second's renders (a folder rendered with the same SEED,
#                SHAPE, RENDERS and MAPS on the same machine is reused).
# MODE finetune: the authors' pretrained model fine-tuned semi-supervised at full resolution
#                (160x192x224, flags/finetune3d.cfg), 4 renders per map.
# SEED (environment) draws other renders (a continued run); SHAPE, RENDERS and MAPS and train flags after [seconds] shrink it for a
# smoke test on CPU: SHAPE=32,32,32 RENDERS=1 MAPS=4 bash tools/gpu_train.sh scratch /tmp/o
# 200 --train=2 --val=2 --epochs=1 --steps_per_epoch=2
# Everything ends within [seconds] (default 300): training ends after its last epoch that
# fits (--time_limit), checkpointed. OUT/MODE/ receives best.keras, config.json,
# history.csv and timing.json, and nothing else (the device tool brings back 8 files at
# most: two runs per call).
set -u
MODE=${1:?usage: gpu_train.sh scratch|finetune OUT [seconds]}
OUT=${2:-runs}
BUDGET=${3:-300}
shift 3 2>/dev/null || shift $#   # the rest goes to vxm_tf.train (a CPU smoke test shrinks it)
case "$MODE" in
    scratch)
        shape=128,128,128 renders=8
        args=(--flagfile=flags/synth3d.cfg --flagfile=flags/ncc.cfg
              --flagfile=flags/synth3d_seg.cfg --train=144 --val=16 --epochs=8
              --steps_per_epoch=1000) ;;
    finetune)
        shape=160,192,224 renders=4
        args=(--flagfile=flags/finetune3d.cfg --train=72 --val=8
              --init_model=.device/vxm_dense_brain_T1_3D_mse.h5 --epochs=8
              --steps_per_epoch=150) ;;
    *) echo "error: MODE must be scratch or finetune, not '$MODE'"; exit 2 ;;
esac
if ! python3 -c "import keras, nibabel" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "error: cannot install the wheels in .whl/"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
start=$(date +%s)
data=/tmp/synth3d-$MODE-${SHAPE:-$shape}-${RENDERS:-$renders}-${MAPS:-0}-${SEED:-0}
if [ ! -f "$data/manifest.json" ]; then
    python3 tools/synth_from_labels.py --label_dir .device/synthseg-label-maps \
        --reference .device/neurite-oasis-3d/OASIS_OAS1_0001_MR1 \
        --intensity_dir .device/neurite-oasis-2d --out_dir "$data" \
        --target_shape "${SHAPE:-$shape}" --renders "${RENDERS:-$renders}" --maps "${MAPS:-0}" \
        --val_maps 2 --seed "${SEED:-0}" --workers "$(nproc)" | tail -2 || exit 1
fi
echo "rendered in $(( $(date +%s) - start )) s"
# the run ends after its last epoch that fits (--time_limit); timeout only as a backstop
left=$(( BUDGET - $(date +%s) + start ))
timeout $left python3 -m vxm_tf.train "${args[@]}" --data_dir="$data" "$@" --time_limit=$(( left > 11 ? left - 10 : 1 )) \
    --precision=auto --verbose=2 --model_dir="$OUT/$MODE" 2>&1 | grep -v "^I0000\|^W0000\|WARNING: All log"
echo "exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
rm -f "$OUT/$MODE/.lock" "$OUT/$MODE/last.keras" "$OUT/$MODE/last_optimizer.npz" "$OUT/$MODE/model.keras" \
    "$OUT/$MODE/state.json" "$OUT/$MODE/versions.json"
