# Train a base generator on the frames of several subjects (base.subjects), once, so that a new
# target can start from it (train.init_from: base) and fine-tune instead of training from nothing.
# Like train_generator's, its checkpoints (results/models/_base/checkpoints) are deliberately not
# an output, so a rerun after a crash or a preemption resumes. generator.pt holds G and D.

for _s in config["base"]["subjects"]:
    if _s not in config["subjects"]:
        raise ValueError(
            f"config base.subjects: {_s!r} is not under 'subjects' (known: {', '.join(SUBJECTS)})"
        )
BASE_MODEL = "results/models/_base/generator.pt"


rule train_base:
    input:
        frames=expand("results/frames/{subject}/frames.mjpeg", subject=config["base"]["subjects"]),
        poses=expand("results/pose_smooth/{subject}.parquet", subject=config["base"]["subjects"]),
    output:
        generator=BASE_MODEL,
        losses="results/models/_base/loss.csv",
        curves=report(
            "results/models/_base/loss.png",
            caption="../report/loss.rst",
            category="Training",
            subcategory="_base",
        ),
        samples=report(
            "results/models/_base/samples.png",
            caption="../report/samples.rst",
            category="Training",
            subcategory="_base",
        ),
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.generator),
        ckpt_dir=lambda wildcards, output: os.path.join(os.path.dirname(output.generator), "checkpoints"),
        settings=settings("train"),
        base=settings("base"),
        labels=settings("labels"),
    log:
        "logs/train_base.log",
    benchmark:
        "logs/benchmarks/train_base.tsv"
    threads: resources("base")["threads"]
    conda:
        "../../envs/gpu.yaml"
    resources:
        gpu=resources("base")["gpus"],
        mem_mb=resources("base")["mem_mb"],
        runtime=resources("base")["runtime"],
        cpus_per_task=resources("base")["cpus_per_task"],
    shell:
        logged(
            "python -m steps.gan.base --threads {threads} --frames {input.frames} --pose {input.poses}"
            " --out-dir {params.out_dir} --ckpt-dir {params.ckpt_dir} --settings {params.settings:q}"
            " --base-settings {params.base:q} --labels {params.labels:q}"
        )
