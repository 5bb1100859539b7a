# Reconstruction of each target's held-out frames (the tail train_generator never trains on) from
# their own poses: the paper's table as CSV and Markdown, and a grid of samples. With
# evaluate.ablation a second generator is trained without temporal smoothing for the table's
# first row (same train settings otherwise, its own checkpoints).
import json


rule train_generator_no_temporal:
    input:
        unpack(iuv_input("target")),
        frames="results/frames/{target}/frames.npy",
        pose="results/pose_smooth/{target}.parquet",
    output:
        generator="results/models/{target}/no_temporal/generator.pt",
        losses="results/models/{target}/no_temporal/loss.csv",
        curves="results/models/{target}/no_temporal/loss.png",
        samples="results/models/{target}/no_temporal/samples.png",
    params:
        out_dir=lambda wildcards: f"results/models/{wildcards.target}/no_temporal",
        ckpt_dir=lambda wildcards: f"results/models/{wildcards.target}/no_temporal/checkpoints",
        train=json.dumps({**config["train"], "temporal": False}),
        labels=json.dumps(config["labels"]),
        iuv=iuv_flag,
    log:
        "logs/train/{target}_no_temporal.log",
    threads: config["train"]["threads"]
    conda:
        "../../envs/gpu.yaml"
    resources:
        gpu=min(1, int(config["train"]["gpus"])),
        mem_mb=config["train"]["mem_mb"],
        runtime=config["train"]["runtime"],
        cpus_per_task=config["train"]["cpus_per_task"],
    shell:
        "python -m steps.train --threads {threads} --frames {input.frames} --pose {input.pose}"
        " --out-dir {params.out_dir} --ckpt-dir {params.ckpt_dir} --train-json {params.train:q}"
        " --labels-json {params.labels:q} {params.iuv} > {log} 2>&1"


rule evaluate:
    input:
        # face.pt when the face GAN is enabled; the generator without temporal smoothing for the ablation
        unpack(
            lambda w: {
                **({"face": f"results/models/{w.target}/face.pt"} if config["face"]["enabled"] else {}),
                **(
                    {"no_temporal": f"results/models/{w.target}/no_temporal/generator.pt"}
                    if config["evaluate"]["ablation"]
                    else {}
                ),
                **iuv_input("target")(w),
            }
        ),
        generator="results/models/{target}/generator.pt",
        frames="results/frames/{target}/frames.npy",
        pose="results/pose_smooth/{target}.parquet",
    output:
        csv=report(
            "results/eval/{target}.csv",
            caption="../report/evaluation.rst",
            category="Evaluation",
            subcategory="{target}",
        ),
        markdown="results/eval/{target}.md",
        grid=report(
            "results/eval/{target}_samples.png",
            caption="../report/evaluation_samples.rst",
            category="Evaluation",
            subcategory="{target}",
        ),
    params:
        face=lambda wildcards, input: f"--face {input.face}" if "face" in input.keys() else "",
        no_temporal=lambda wildcards, input: (
            f"--no-temporal {input.no_temporal}" if "no_temporal" in input.keys() else ""
        ),
        iuv=iuv_flag,
        options=json.dumps(
            {
                "detect": config["evaluate"]["detect"],
                "max_frames": config["evaluate"]["max_frames"],
                "samples": config["evaluate"]["samples"],
                "min_confidence": config["stats"]["min_confidence"],
                "face_size": config["face"]["size"],
                "face_smooth_window": config["face"]["smooth_window"],
            }
        ),
    log:
        "logs/evaluate/{target}.log",
    threads: config["evaluate"]["threads"]
    conda:
        "../../envs/gpu.yaml"
    resources:
        gpu=config["evaluate"]["gpus"],
        mem_mb=config["evaluate"]["mem_mb"],
        runtime=config["evaluate"]["runtime"],
    shell:
        "python -m steps.evaluate --threads {threads} --frames {input.frames} --pose {input.pose}"
        " --generator {input.generator} {params.face} {params.no_temporal} {params.iuv} --options-json {params.options:q}"
        " --title 'Reconstruction of {wildcards.target}'"
        " --csv {output.csv} --markdown {output.markdown} --grid {output.grid} > {log} 2>&1"
