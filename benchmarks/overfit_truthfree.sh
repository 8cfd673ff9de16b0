#!/usr/bin/env bash
# A deliberately overfitted run that the truth-free score must flag (issue 20).
#
# A large U-Net is trained with Noise2Noise on a few boxes of a small simulated tomogram for many epochs
# with no early stopping, and its *last* weights (taken from checkpoint.pt; the model directory keeps the
# best held-out epoch, which is what protects ordinary runs) are scored twice:
#   1. on the slab training held out (the honest score of an overfitted network), and
#   2. on the region where its training boxes lay (--holdout y:0:TRAIN_STOP), i.e. "n2n scored with the slab
#      included in training": the network has memorised f(even) ≈ odd there, the estimated gain is far too
#      optimistic, and the leak check must flag it.
# Usage: benchmarks/overfit_truthfree.sh [OUT_DIR]   (CPU, a few minutes)
# Measured: on 2 shared CPU cores 900 steps did not memorise (RESULTS.md); the overfits that are flagged are
# in benchmarks/RESULTS.md, "Truth-free score: F2F validation" (quick-preset n2n scored on its training boxes; benchmarks/overfit_truthfree.py).
set -euo pipefail
D=${1:-bench/overfit}
PY=${PYTHON:-python}
mkdir -p "$D"
[ -f "$D/sim/even.mrc" ] || $PY -m cryorestore simulate "$D/sim" --shape 40 96 96 --seed 0
$PY -m cryorestore train --even "$D/sim/even.mrc" --odd "$D/sim/odd.mrc" --method n2n --preset quick \
    --model-option base_channels=${BASE:-24} --model-option depth=2 --model-option convs_per_block=2 \
    --subtomo-size 16 --n-subtomos 24 --max-steps ${STEPS:-1500} \
    --batch-size 4 --epochs 100000 --patience 100000 --lr 1e-3 --lr-schedule constant \
    --device cpu --no-progress --out "$D/model"
$PY - "$D" <<'PYEOF'
import json, shutil, sys
from pathlib import Path
import torch
d = Path(sys.argv[1])
last = d / "model_last"
shutil.copytree(d / "model", last, dirs_exist_ok=True)
ck = torch.load(d / "model" / "checkpoint.pt", map_location="cpu", weights_only=False)
torch.save(ck["model"], last / "weights.pt")
print(f"model_last: weights after epoch {ck['epoch'] + 1}; best held-out epoch was {ck['best_epoch'] + 1}")
PYEOF
STOP=$($PY -c "import json,sys; h=json.load(open('$D/model/config.json'))['holdout'][0]; print('zyx'[h['axis']] + ':0:' + str(h['train_stop']))")
$PY -m cryorestore score --even "$D/sim/even.mrc" --odd "$D/sim/odd.mrc" --model "$D/model_last" \
    --tta none --device cpu --out-dir "$D/score_heldout"
$PY -m cryorestore score --even "$D/sim/even.mrc" --odd "$D/sim/odd.mrc" --model "$D/model_last" \
    --holdout "$STOP" --tta none --device cpu --out-dir "$D/score_training_region"
