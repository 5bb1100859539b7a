# The two commands a new user runs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all

.PHONY: setup demo test lint bench clean gpu-bundle

setup: $(STAMP)

# The project itself goes in editable (pyproject.toml): edits in steps/ need no reinstall, so the
# stamp only has to follow the files that list packages.
$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

# The whole pipeline on the embedded demo (.test/demo/config/config.yaml): two rendered dancers,
# demo-sized GANs (CPU minutes). Everything it writes is under .test/demo/.
DEMO := .test/demo
demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --directory $(DEMO)
	$(BIN)/snakemake --directory $(DEMO) --report results/report.html
	@echo
	@cat $(DEMO)/results/eval/demo_target.md
	@echo
	@echo "Everything below is under $(DEMO)/:"
	@echo "Transfer video:     results/transfer/demo_source__demo_target.mp4"
	@echo "Side by side:       results/transfer/demo_source__demo_target_side_by_side.mp4 (source | pose | output)"
	@echo "Stills:             results/transfer/demo_source__demo_target_stills/"
	@echo "Evaluation table:   results/eval/demo_target.md"
	@echo "Training curves:    results/models/demo_target/loss.png, face_loss.png"
	@echo "Report (all plots): results/report.html"

# install_slurm.sh installs slurm-wlm and munge for the one-node cluster test when it can (root,
# apt-get) and otherwise says why the SLURM tests will skip.
test: $(STAMP)
	bash tests/cluster/install_slurm.sh
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/ruff check --select F,E9 --line-length 120 steps tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/decode.py
	$(BIN)/python benchmarks/pose.py

# What benchmarks/gpu.py needs on a GPU machine (issue 19): ../shared/data/clips/model_target.mp4
# and dancer_source.mp4 through the workflow's first half, packed into gpu_bundle/ (< 60 MiB).
# Then, on the GPU: python benchmarks/gpu.py --bundle gpu_bundle --out OUT --budget 480
# .whl/: ffmpeg for the GPU machine's Python 3.12 (30 MB; carry it too when the two fit in 64 MiB):
# without it gpu.py's transfer table stops before the encoders and end to end.
gpu-bundle: $(STAMP)
	$(BIN)/python benchmarks/gpu_bundle.py --out gpu_bundle
	-$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
		-d .whl imageio-ffmpeg==0.6.0 ffmpeg-python==0.2.0 future==1.0.0

clean:
	rm -rf results logs .snakemake $(DEMO)/results $(DEMO)/logs $(DEMO)/.snakemake
