#!/usr/bin/env bash
# Install the two peers into their own virtual environments OUTSIDE this repository (nothing of theirs is
# committed here). Usage: benchmarks/peers/install.sh [PEERS_ROOT]   (default: $PEERS_ROOT or $HOME/peers)
# Versions are pinned to what installed and ran on Python 3.11 (see README.md).
set -euo pipefail
root=${1:-${PEERS_ROOT:-$HOME/peers}}
py=${PYTHON:-python3}
mkdir -p "$root"

# cryoCARE 0.3.0 pins numpy~=1.19.2, which has no wheel for Python 3.11: install its other requirements
# (csbdeep <0.8 needs Keras 2, hence TensorFlow 2.15, the last release with Keras 2) and then cryoCARE
# itself without dependencies.
"$py" -m venv "$root/cryocare"
"$root/cryocare/bin/pip" install "tensorflow-cpu==2.15.1" "numpy<2" "csbdeep>=0.7.0,<0.8.0" mrcfile psutil
"$root/cryocare/bin/pip" install --no-deps "cryocare==0.3.0"

# Topaz-Denoise: torchvision from PyPI is built against PyPI's torch, so keep that pair (a +cpu torch with it
# fails with 'operator torchvision::nms does not exist'); setuptools<81 provides pkg_resources, through
# which topaz 0.3.20 loads its pretrained models on Python 3.11.
"$py" -m venv "$root/topaz"
"$root/topaz/bin/pip" install "torch==2.14.1" "torchvision==0.29.1" "setuptools<81"
"$root/topaz/bin/pip" install "topaz-em==0.3.20"
echo "peers installed under $root"
