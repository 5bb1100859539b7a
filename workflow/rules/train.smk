# Train the pose-to-video generator of each target person (GPU when there is one).
#
# Checkpoints (step_*.pt and best.pt), the live loss.csv and interim sample grids go to
# results/models/{target}/checkpoints, which is deliberately not an output: Snakemake deletes the
# outputs of a failed or killed job and before a rerun, and the checkpoints must survive both so
# that the rerun resumes (after a crash, a kill or a SLURM preemption, which sends SIGTERM: the
# loop saves a checkpoint and exits non-zero). Delete that folder to train from scratch. With
# train.resources.gpus > 1 the job runs one process per GPU under torchrun (DDP).
#
# Changed settings (beyond the step budget, validation, checkpointing and resources) stop the job
# before training with the changed keys listed: delete the checkpoints folder, or set
# train.continue: true. With train.init_from: base the job waits for train_base (base.smk) and
# starts from its G and D when the target has no checkpoints of its own.


rule train_generator:
    input:
        unpack(iuv_input("target")),
        # train.init_from: base waits for the base model (BASE_MODEL, base.smk)
        unpack(lambda wildcards: {"base": BASE_MODEL} if config["train"]["init_from"] == "base" else {}),
        frames="results/frames/{target}/frames.mjpeg",
        pose="results/pose_smooth/{target}.parquet",
    output:
        generator="results/models/{target}/generator.pt",
        losses="results/models/{target}/loss.csv",
        curves=report(
            "results/models/{target}/loss.png",
            caption="../report/loss.rst",
            category="Training",
            subcategory="{target}",
        ),
        samples=report(
            "results/models/{target}/samples.png",
            caption="../report/samples.rst",
            category="Training",
            subcategory="{target}",
        ),
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.generator),
        ckpt_dir=lambda wildcards, output: os.path.join(os.path.dirname(output.generator), "checkpoints"),
        settings=settings("train"),
        labels=settings("labels"),
        # torchrun (DDP, one process per GPU) when the job gets more than one GPU
        launcher=(
            f"torchrun --standalone --nproc_per_node={resources('train')['gpus']} -m steps.gan.train"
            if resources("train")["gpus"] > 1
            else "python -m steps.gan.train"
        ),
        iuv=iuv_flag,
        base=lambda wildcards, input: f"--base {input.base}" if "base" in input.keys() else "",
        threads_per_process=lambda wildcards, threads: max(1, threads // max(1, resources("train")["gpus"])),
    log:
        "logs/train/{target}.log",
    benchmark:
        "logs/benchmarks/train_generator/{target}.tsv"
    threads: resources("train")["threads"]
    conda:
        "../../envs/gpu.yaml"
    resources:
        gpu=resources("train")["gpus"],
        mem_mb=resources("train")["mem_mb"],
        runtime=resources("train")["runtime"],
        cpus_per_task=resources("train")["cpus_per_task"],
    shell:
        logged(
            "{params.launcher} --threads {params.threads_per_process} --frames {input.frames} --pose {input.pose}"
            " --out-dir {params.out_dir} --ckpt-dir {params.ckpt_dir} --settings {params.settings:q}"
            " --labels {params.labels:q} {params.iuv} {params.base}"
        )


# The ablation of the evaluation table (evaluate.ablation): the same generator without temporal
# smoothing, its own checkpoints, one process, from scratch (a base is a temporal model).
use rule train_generator as train_generator_no_temporal with:
    output:
        generator="results/models/{target}/no_temporal/generator.pt",
        losses="results/models/{target}/no_temporal/loss.csv",
        curves="results/models/{target}/no_temporal/loss.png",
        samples="results/models/{target}/no_temporal/samples.png",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.generator),
        ckpt_dir=lambda wildcards, output: os.path.join(os.path.dirname(output.generator), "checkpoints"),
        settings=settings("train", model={**config["train"]["model"], "temporal": False}, init_from=None),
        labels=settings("labels"),
        launcher="python -m steps.gan.train",
        iuv=iuv_flag,
        base="",
        threads_per_process=lambda wildcards, threads: threads,
    log:
        "logs/train/{target}_no_temporal.log",
    benchmark:
        "logs/benchmarks/train_generator/{target}_no_temporal.tsv"
    resources:
        gpu=min(1, resources("train")["gpus"]),
        mem_mb=resources("train")["mem_mb"],
        runtime=resources("train")["runtime"],
        cpus_per_task=resources("train")["cpus_per_task"],
