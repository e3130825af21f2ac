#!/usr/bin/env bash
# Idempotent set-up for Google Colab (or any machine that already has torch + torchaudio).
# Installs only what the notebooks import and the runtime lacks. Colab's own torch, torchaudio and
# ipywidgets (7.x, the version its front end renders) are left alone, and no test tools are
# installed. The notebooks import nmusic from this folder (their first cell puts it on sys.path).
# Usage (the notebooks' first cell runs it):  !bash colab_setup.sh
set -euo pipefail
cd "$(dirname "$0")"

# What the notebooks need besides torch/torchaudio (kept in sync with pyproject.toml by a test).
# pip leaves a requirement that is already met alone (no upgrades); when everything imports, pip is
# not even started (the notebooks run this in their first cell, also after a runtime restart).
PIP_PACKAGES=(
  "numpy>=1.24"
  "soundfile>=0.12.1"
  "tqdm>=4.64"
  "matplotlib>=3.7"
  "gdown>=5.1"
  "pyyaml>=6.0"
  "vocos>=0.1.0"
  "pretty_midi>=0.2.10"
  "ipywidgets>=7.6"
)

if ! python -c "import torch, torchaudio" 2>/dev/null; then
  echo "torch/torchaudio missing: installing the pinned pair"
  pip install -q "torch==2.11.0" "torchaudio==2.11.0"
fi
if ! python -c "import numpy, soundfile, tqdm, matplotlib, gdown, yaml, pretty_midi, ipywidgets" 2>/dev/null; then
  pip install -q "${PIP_PACKAGES[@]}"
fi
# Colab ships FFmpeg (needed for .m4a/.webm); elsewhere, install it with the system's package manager.
command -v ffmpeg >/dev/null || echo "note: ffmpeg not found; .m4a/.webm files will be reported as undecodable"
python -c "import torch, ipywidgets; print('torch', torch.__version__, '| ipywidgets', ipywidgets.__version__, '| cuda', torch.cuda.is_available())"
