#!/usr/bin/env bash
# Installs Debian's slurm-wlm and munge for the one-node SLURM test (tests/test_slurm.py),
# only when they are missing and only when running as root with apt-get; otherwise it says
# why it does nothing and exits 0 (the SLURM test then skips, saying why).
# Called by `make test` and .ci/run. Starts no daemon: the test fixture does that.
set -u
need=()
for bin in munged slurmctld slurmd sbatch squeue sinfo scontrol scancel; do
    command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_slurm.sh: not root; not installing slurm-wlm/munge (missing: ${need[*]})" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_slurm.sh: no apt-get; install slurm-wlm and munge yourself (missing: ${need[*]})" >&2
    exit 0
fi
echo "install_slurm.sh: installing slurm-wlm and munge (missing: ${need[*]})" >&2
export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge; } >/tmp/install_slurm.log 2>&1; then
    echo "install_slurm.sh: apt-get failed (log: /tmp/install_slurm.log); the SLURM test will skip" >&2
    tail -5 /tmp/install_slurm.log >&2
    exit 0
fi
echo "install_slurm.sh: installed in $(( $(date +%s) - start )) s" >&2
