# Everybody Dance Now as a Snakemake workflow: thin on purpose. Each stage lives in its own
# rule file under workflow/rules/ and calls a module of the `steps` package.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/synth.smk"
include: "workflow/rules/frames.smk"
include: "workflow/rules/pose.smk"
include: "workflow/rules/smooth.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/normalize.smk"
include: "workflow/rules/labels.smk"
include: "workflow/rules/base.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/face.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/reconstruction.smk"
include: "workflow/rules/score.smk"


rule all:
    input:
        all_targets(),
    default_target: True


# The first half alone (`snakemake --cores all prepare`): check the poses, statistics and label
# maps of new videos before spending GPU hours on training.
rule prepare:
    input:
        prepare_targets(),
