#!/usr/bin/env bash
# Restore a map with Topaz-Denoise's pretrained 3D U-Net ('topaz denoise3d', no training), from Topaz's
# virtual environment.
#
#   benchmarks/peers/run_topaz.sh INPUT.mrc OUT_DIR
#
# Writes OUT_DIR/restored.mrc, topaz.log, seconds.txt and versions.txt. Settings (environment):
#   TOPAZ_VENV (default $PEERS_ROOT/topaz, PEERS_ROOT default $HOME/peers), MODEL (unet-3d-10a: trained on
#   tomograms of 10 Å pixels; unet-3d-20a for 20 Å), PATCH (0 = the whole volume in one pass, no tile
#   seams; Topaz's default is 96 with PADDING 48, i.e. 192³ windows), PADDING (48), THREADS (2).
set -euo pipefail
inp=$(realpath "$1"); out=$(realpath -m "$2")
venv=${TOPAZ_VENV:-${PEERS_ROOT:-$HOME/peers}/topaz}
MODEL=${MODEL:-unet-3d-10a}; PATCH=${PATCH:-0}; PADDING=${PADDING:-48}; THREADS=${THREADS:-2}
[[ -f $inp ]] || { echo "run_topaz: $inp is missing" >&2; exit 2; }
[[ -x $venv/bin/topaz ]] || { echo "run_topaz: no topaz in $venv (run install.sh)" >&2; exit 2; }
mkdir -p "$out/topaz_out"
t0=$SECONDS
"$venv/bin/topaz" denoise3d "$inp" -m "$MODEL" -o "$out/topaz_out" -d -1 -j "$THREADS" -s "$PATCH" -p "$PADDING" \
  > "$out/topaz.log" 2>&1 || { echo "run_topaz: topaz failed, see $out/topaz.log" >&2; tail -5 "$out/topaz.log" >&2; exit 1; }
echo "denoise3d $((SECONDS - t0))" > "$out/seconds.txt"
mv -f "$out/topaz_out/$(basename "$inp")" "$out/restored.mrc"
rmdir "$out/topaz_out"
"$venv/bin/python" -c "from importlib.metadata import version as v; print('topaz-em', v('topaz-em'), 'torch', v('torch'), 'model $MODEL')" \
  > "$out/versions.txt"
cat "$out/seconds.txt" "$out/versions.txt"
echo "wrote $out/restored.mrc"
