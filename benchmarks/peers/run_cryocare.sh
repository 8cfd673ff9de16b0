#!/usr/bin/env bash
# Train cryoCARE (Noise2Noise U-Net, TensorFlow) on a simulated dataset's even/odd half tomograms and
# predict the restored map, with cryoCARE's own command-line scripts from its virtual environment.
#
#   benchmarks/peers/run_cryocare.sh DATA_DIR OUT_DIR
#
# DATA_DIR holds even.mrc and odd.mrc (as 'cryorestore simulate' writes them); OUT_DIR gets the three JSON
# configs, the logs, the model, restored.mrc (the mean of the network applied to even and odd, as
# cryoCARE_predict.py writes it) and seconds.txt (wall time of each stage). Settings (environment):
#   CRYOCARE_VENV (default $PEERS_ROOT/cryocare, PEERS_ROOT default $HOME/peers), PATCH (24: cryoCARE
#   requires every axis > 2*PATCH, and 64-voxel-thick maps allow at most 31; divisible by 2^DEPTH),
#   NUM_SLICES (1200 sub-volumes extracted), EPOCHS (60), STEPS (20 steps per epoch), BATCH (16),
#   DEPTH (3), N_FIRST (16), KERN (3), LR (0.0004), SPLIT (0.9, train fraction along the tilt axis y);
#   500 normalisation samples (fewer when there are fewer training sub-volumes).
set -euo pipefail
data=$(realpath "$1"); out=$(realpath -m "$2")
venv=${CRYOCARE_VENV:-${PEERS_ROOT:-$HOME/peers}/cryocare}
PATCH=${PATCH:-24}; NUM_SLICES=${NUM_SLICES:-1200}; EPOCHS=${EPOCHS:-60}; STEPS=${STEPS:-20}
BATCH=${BATCH:-16}; DEPTH=${DEPTH:-3}; N_FIRST=${N_FIRST:-16}; KERN=${KERN:-3}; LR=${LR:-0.0004}
SPLIT=${SPLIT:-0.9}
# cryoCARE draws its normalisation samples from the training sub-volumes: never more than there are
NORM=$(python3 -c "print(min(500, int($NUM_SLICES * $SPLIT)))")
for f in even.mrc odd.mrc; do [[ -f $data/$f ]] || { echo "run_cryocare: $data/$f is missing" >&2; exit 2; }; done
[[ -x $venv/bin/cryoCARE_train.py ]] || { echo "run_cryocare: no cryoCARE in $venv (run install.sh)" >&2; exit 2; }
mkdir -p "$out"
cd "$out"
rm -rf train_data model predicted model.tar.gz
# "gpu_id": 0 on a machine without a GPU: cryoCARE then warns and runs on the CPU (without the key it
# stops with an UnboundLocalError)
cat > train_data_config.json <<JSON
{"even": ["$data/even.mrc"], "odd": ["$data/odd.mrc"], "patch_shape": [$PATCH, $PATCH, $PATCH],
 "num_slices": $NUM_SLICES, "split": $SPLIT, "tilt_axis": "Y", "n_normalization_samples": $NORM,
 "path": "$out/train_data"}
JSON
cat > train_config.json <<JSON
{"train_data": "$out/train_data", "epochs": $EPOCHS, "steps_per_epoch": $STEPS, "batch_size": $BATCH,
 "unet_kern_size": $KERN, "unet_n_depth": $DEPTH, "unet_n_first": $N_FIRST, "learning_rate": $LR,
 "model_name": "model", "path": "$out", "gpu_id": 0}
JSON
cat > predict_config.json <<JSON
{"path": "$out/model.tar.gz", "even": "$data/even.mrc", "odd": "$data/odd.mrc", "n_tiles": [1, 1, 1],
 "output": "$out/predicted", "overwrite": true, "gpu_id": 0}
JSON
export PATH="$venv/bin:$PATH" CUDA_VISIBLE_DEVICES="" TF_CPP_MIN_LOG_LEVEL=2
: > seconds.txt
stage() {  # name, command...: run one stage, log it, record its wall time
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$name.log" 2>&1 || { echo "run_cryocare: $name failed, see $out/$name.log" >&2; tail -5 "$name.log" >&2; exit 1; }
  echo "$name $((SECONDS - t0))" >> seconds.txt
}
stage extract "$venv/bin/python" "$venv/bin/cryoCARE_extract_train_data.py" --conf train_data_config.json
stage train "$venv/bin/python" "$venv/bin/cryoCARE_train.py" --conf train_config.json
stage predict "$venv/bin/python" "$venv/bin/cryoCARE_predict.py" --conf predict_config.json
mv -f predicted/even.mrc restored.mrc
"$venv/bin/python" -c "import csbdeep, cryocare, tensorflow as tf; from importlib.metadata import version; \
print('cryoCARE', version('cryoCARE'), 'csbdeep', csbdeep.__version__, 'tensorflow', tf.__version__)" > versions.txt 2>/dev/null
cat seconds.txt versions.txt
echo "wrote $out/restored.mrc"
