# Train the pose-to-video generator of each target person (GPU when there is one).
#
# Checkpoints, the live loss.csv and interim sample grids go to results/models/{target}/checkpoints,
# which is deliberately not an output: Snakemake deletes the outputs of a failed or killed job
# and before a rerun, and the checkpoints must survive both so that the rerun resumes (after a
# crash, a kill or a SLURM preemption, which sends SIGTERM: the loop saves a checkpoint and exits
# non-zero). Delete that folder to train from scratch. With train.gpus > 1 the job runs one
# process per GPU under torchrun (DDP).
import json


rule train_generator:
    input:
        unpack(iuv_input("target")),
        frames="results/frames/{target}/frames.npy",
        pose="results/pose_smooth/{target}.parquet",
    output:
        generator="results/models/{target}/generator.pt",
        losses="results/models/{target}/loss.csv",
        curves=report("results/models/{target}/loss.png", category="Training", subcategory="{target}"),
        samples=report("results/models/{target}/samples.png", category="Training", subcategory="{target}"),
    params:
        out_dir=lambda wildcards: f"results/models/{wildcards.target}",
        ckpt_dir=lambda wildcards: f"results/models/{wildcards.target}/checkpoints",
        train=json.dumps(config["train"]),
        labels=json.dumps(config["labels"]),
        # torchrun (DDP, one process per GPU) when the job gets more than one GPU
        launcher=lambda wildcards: (
            f"torchrun --standalone --nproc_per_node={config['train']['gpus']} -m steps.train"
            if int(config["train"]["gpus"]) > 1
            else "python -m steps.train"
        ),
        iuv=iuv_flag,
        threads_per_process=lambda wildcards, threads: max(1, threads // max(1, int(config["train"]["gpus"]))),
    log:
        "logs/train/{target}.log",
    threads: config["train"]["threads"]
    conda:
        "../../envs/gpu.yaml"
    resources:
        gpu=config["train"]["gpus"],
        mem_mb=config["train"]["mem_mb"],
        runtime=config["train"]["runtime"],
        cpus_per_task=config["train"]["cpus_per_task"],
    shell:
        "{params.launcher} --threads {params.threads_per_process} --frames {input.frames} --pose {input.pose} --out-dir {params.out_dir}"
        " --ckpt-dir {params.ckpt_dir} --train-json {params.train:q} --labels-json {params.labels:q} {params.iuv}"
        " > {log} 2>&1"
