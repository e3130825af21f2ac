#!/usr/bin/env bash
# Idempotent set-up for Google Colab (or any machine that already has torch + torchaudio).
# Installs what Colab lacks and leaves Colab's own torch/torchaudio alone.
# Usage (from a notebook):  !bash colab_setup.sh
set -euo pipefail
cd "$(dirname "$0")"

# Everything nmusic needs except torch/torchaudio (kept in sync with pyproject.toml by a test).
PIP_PACKAGES=(
  "numpy>=1.24"
  "soundfile>=0.12.1"
  "tqdm>=4.64"
  "matplotlib>=3.7"
  "gdown>=5.1"
  "pyyaml>=6.0"
  "ipywidgets>=8.0"
  "jupytext>=1.16"
  "ipykernel>=6.0"
  "pytest>=7.4"
  "nbval>=0.11"
  "nbformat>=5.9"
  "nbclient>=0.8"
)

if ! python -c "import torch, torchaudio" 2>/dev/null; then
  echo "torch/torchaudio missing: installing the pinned pair"
  pip install -q "torch==2.11.0" "torchaudio==2.11.0"
fi
pip install -q "${PIP_PACKAGES[@]}"
# --no-deps: never replace the runtime's torch.
pip install -q --no-deps -e .
if ! command -v ffmpeg >/dev/null && command -v apt-get >/dev/null; then
  (apt-get install -y -qq ffmpeg >/dev/null 2>&1 || sudo apt-get install -y -qq ffmpeg >/dev/null 2>&1) \
    || echo "note: ffmpeg not installed; .m4a/.webm files will be reported as undecodable"
fi
python -c "import nmusic, torch; print('nmusic', nmusic.__version__, '| torch', torch.__version__, '| cuda', torch.cuda.is_available())"
