#!/usr/bin/env bash
# One GPU check for cryorestore, in under 8 minutes on one GPU; every figure goes to a file.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]             # on a GPU machine (OUT_DIR default: $OUT or ./gpu_check_out)
#   bash benchmarks/gpu_check.sh --dry-run [OUT_DIR]   # the same steps on the CPU at toy sizes (checks the script)
#
# Steps, in this order (each fails soft: its exit status and time go to summary.tsv and the run goes on):
#   env           nvidia-smi, torch/CUDA versions, GPU count                                  env.txt
#   build         the C++/CUDA extension (python -m cryorestore.native --build --require-cuda)  build.log
#   cuda_tests    the CUDA parity tests (pytest -m cuda)                                      cuda_tests.log
#   predict       cryorestore predict of a 512x1024x1024 map, default U-Net, tile 96:
#                 wall time, peak GPU memory, peak host RSS (bench_predict_memory.py)       predict.{log,json}
#   oom_halving   predict with all but 3 GiB of the GPU taken: the batch must halve, exit 0   oom_halving.{log,json}
#   oom_one_tile  predict with all but 64 MiB taken: exit 75 and no output                    oom_one_tile.{log,json}
#   kernels       each native kernel against its torch twin, CUDA events (bench_native.py)    kernels.log
#   train_step    U-Net training steps fp32 vs bf16 autocast, CUDA events (bench_train_step) train_step.{log,json}
#   ddp           with two or more GPUs, training wall time on 1 and on 2 GPUs (torchrun)     ddp_*.log
# then figures.md collects the figures.
#
# Assumes (nothing is installed, nothing is downloaded): run from anywhere inside the repository;
# python with a CUDA build of torch, numpy, mrcfile, pytest and this package's dependencies; nvcc and
# ninja for the extension; coreutils `timeout`. The package is taken from this checkout (PYTHONPATH).
# A global deadline of 470 s ($GPU_CHECK_BUDGET_S) caps every step, so the whole check ends in under 8 minutes
# (--dry-run: 2400 s and five times each step's limit, for a shared CPU).
set -u -o pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUTDIR=${1:-${OUT:-$PWD/gpu_check_out}}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
export PYTHONPATH="$REPO/python${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)
BUDGET_S=${GPU_CHECK_BUDGET_S:-$((DRY ? 2400 : 470))}
SUMMARY="$OUTDIR/summary.tsv"
printf 'step\texit\tseconds\tnote\n' > "$SUMMARY"

NGPU=0
if command -v nvidia-smi > /dev/null 2>&1; then NGPU=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true); fi

# run_step NAME LIMIT_S CMD...: run CMD with at most LIMIT_S (and the time left), log to NAME.log
run_step() {
    local name=$1 limit=$2
    shift 2
    ((DRY)) && limit=$((limit * 5)) # toy sizes on a (possibly shared) CPU: more time, no figures
    local left=$((START + BUDGET_S - $(date +%s)))
    ((left < limit)) && limit=$left
    if ((limit < 5)); then
        printf '%s\t-\t0\tskipped: no time left in the %s s budget\n' "$name" "$BUDGET_S" >> "$SUMMARY"
        return 0
    fi
    local t0 rc ms note=""
    t0=$(date +%s%N)
    timeout --kill-after=10 "$limit" "$@" > "$OUTDIR/$name.log" 2>&1
    rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    ((rc == 124 || rc == 137)) && note="timed out after ${limit} s"
    printf '%s\t%s\t%d.%d\t%s\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000 / 100)) "$note" >> "$SUMMARY"
    echo "[gpu_check] $name: exit $rc ${note}"
    return 0
}

skip_step() {
    printf '%s\t-\t0\tskipped: %s\n' "$1" "$2" >> "$SUMMARY"
    echo "[gpu_check] $1: skipped ($2)"
}

cd "$REPO" || exit 1

# --- env -------------------------------------------------------------------------------------
env_info() {
    date -u
    nvidia-smi || echo "no nvidia-smi"
    nvcc --version || echo "no nvcc"
    "$PY" -c "
import platform, torch
print('python', platform.python_version(), '| torch', torch.__version__, '| CUDA', torch.version.cuda,
      '| cuDNN', torch.backends.cudnn.version(), '| GPUs', torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f'  {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}')
"
}
export -f env_info
export PY
run_step env 20 bash -c env_info
mv "$OUTDIR/env.log" "$OUTDIR/env.txt"

# --- build and parity tests --------------------------------------------------------------------
if ((DRY)); then
    run_step build 180 "$PY" -m cryorestore.native --build
else
    run_step build 180 "$PY" -m cryorestore.native --build --require-cuda
fi
run_step cuda_tests 100 "$PY" -m pytest -m cuda -q -p no:cacheprovider -o addopts="" tests

# --- prediction of a 512x1024x1024 tomogram ----------------------------------------------------
if ((DRY)); then
    P=(--shape 24 48 40 --tile 16 --device cpu --net small)
    P_OOM=(--shape 24 40 40 --tile 16 --device cpu --net small)
else
    P=(--shape 512 1024 1024 --tile 96 --device cuda --net default)
    P_OOM=(--shape 128 384 384 --tile 96 --device cuda --net default)
fi
run_step predict 200 "$PY" benchmarks/bench_predict_memory.py "${P[@]}" --batch-size 4 \
    --workdir "$WORK/predict" --json "$OUTDIR/predict.json"
rm -rf "$WORK/predict"

# --- out-of-memory fallback against the real allocator -----------------------------------------
if ((DRY)); then
    run_step oom_halving 60 "$PY" benchmarks/bench_predict_memory.py "${P_OOM[@]}" --batch-size 32 \
        --workdir "$WORK/oom" --json "$OUTDIR/oom_halving.json"
    skip_step oom_one_tile "needs a GPU to exhaust"
else
    run_step oom_halving 50 "$PY" benchmarks/bench_predict_memory.py "${P_OOM[@]}" --batch-size 32 \
        --leave-free-mib 3072 --workdir "$WORK/oom" --json "$OUTDIR/oom_halving.json"
    run_step oom_one_tile 40 "$PY" benchmarks/bench_predict_memory.py "${P_OOM[@]}" --batch-size 4 \
        --leave-free-mib 64 --expect-exit 75 --workdir "$WORK/oom1" --json "$OUTDIR/oom_one_tile.json"
fi
rm -rf "$WORK/oom" "$WORK/oom1"

# --- kernels against their twins ---------------------------------------------------------------
if ((DRY)); then
    run_step kernels 60 "$PY" benchmarks/bench_native.py --device cpu --quick --repeats 2 --no-numpy-timing
else
    run_step kernels 60 "$PY" benchmarks/bench_native.py --device cuda --repeats 10 --no-numpy-timing
fi

# --- training steps fp32 vs bf16 ---------------------------------------------------------------
if ((DRY)); then
    run_step train_step 60 "$PY" benchmarks/bench_train_step.py --device cpu --net small --batch 2 --size 16 \
        --warmup 1 --steps 2 --json "$OUTDIR/train_step.json"
else
    run_step train_step 45 "$PY" benchmarks/bench_train_step.py --device cuda --net default --batch 8 --size 64 \
        --warmup 3 --steps 20 --json "$OUTDIR/train_step.json"
fi

# --- two GPUs: distributed training ------------------------------------------------------------
if ((DRY)) || ((NGPU < 2)); then
    skip_step ddp "needs two GPUs (found $NGPU)"
elif ! "$PY" -m cryorestore train --help 2> /dev/null | grep -q -- '--devices'; then
    skip_step ddp "this build of cryorestore train has no multi-GPU option"
else
    run_step ddp_data 40 "$PY" -m cryorestore simulate "$WORK/ddp_data" --shape 64 192 192 --seed 0 --device cuda
    TRAIN=(-m cryorestore train "--even=$WORK/ddp_data/even.mrc" "--odd=$WORK/ddp_data/odd.mrc" --method n2n
        --model unet --loss l2 --epochs 3 --subtomo-size 64 --n-subtomos 128 --batch-size 16 --device cuda --no-progress)
    run_step ddp_1gpu 60 "$PY" "${TRAIN[@]}" --out "$WORK/ddp_1"
    run_step ddp_2gpu 75 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 "${TRAIN[@]}" --out "$WORK/ddp_2"
fi

# --- figures.md ----------------------------------------------------------------------------------
"$PY" - "$OUTDIR" > "$OUTDIR/figures.md" 2> "$OUTDIR/figures.err" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
print("# gpu_check figures\n")
print("```")
print((out / "env.txt").read_text().strip() if (out / "env.txt").is_file() else "no env.txt")
print("```\n")
print("| step | exit | seconds | note |\n|---|---|---|---|")
for line in (out / "summary.tsv").read_text().splitlines()[1:]:
    print("| " + " | ".join(line.split("\t")) + " |")


def load(name):
    p = out / name
    return json.loads(p.read_text()) if p.is_file() else None


if (log := out / "kernels.log").is_file():
    print("\n## Kernels (bench_native.py)\n\n```\n" + log.read_text().strip()[-4000:] + "\n```")
if (t := load("train_step.json")):
    print(f"\n## Training steps ({t['device']}, U-Net {t['net']}, batch {t['batch']}, cudnn TF32 {t['cudnn_allow_tf32']})\n")
    for r in t["rows"]:
        print(f"- {r['precision']}: {r['ms_per_step']:.2f} ms/step, {r['voxels_per_s'] / 1e6:.1f} Mvox/s, peak {r['peak_mib']} MiB")
for name in ("predict.json", "oom_halving.json", "oom_one_tile.json"):
    if (p := load(name)):
        s = p["runs"].get("streaming", {})
        print(f"\n## {name[:-5]}: {p['shape']} tile {p['tile']} batch {p['batch_size']} on {s.get('device_name')}\n")
        print(f"- exit {s.get('returncode')}, predict wall {s.get('predict_wall_s', float('nan')):.1f} s, "
              f"process wall {s.get('process_wall_s', float('nan')):.1f} s")
        print(f"- peak GPU allocated {s.get('cuda_peak_allocated_mib')} MiB, reserved {s.get('cuda_peak_reserved_mib')} MiB, "
              f"blocked {s.get('blocked_mib')} MiB")
        print(f"- peak host RSS {s.get('peak_rss_mib', float('nan')):.0f} MiB for {p['input_mib']:.0f} MiB of input "
              f"(bound {p['bound_mib']:.0f} MiB); out-of-memory retries: {len(s.get('oom_retries', []))}")
        print(f"- expectations met: {p.get('ok')}")
for name in ("ddp_1gpu", "ddp_2gpu"):
    if (log := out / f"{name}.log").is_file():
        print(f"\n## {name}\n\n```\n" + log.read_text().strip()[-1500:] + "\n```")
EOF
echo "[gpu_check] done in $(($(date +%s) - START)) s; figures in $OUTDIR (summary.tsv, figures.md)"
