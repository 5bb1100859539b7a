# Train the face GAN of each target (GPU when there is one), after its main generator, which stays
# frozen. Like train_generator, the checkpoints (and the cached face crops) live in
# results/models/{target}/face_checkpoints, deliberately not an output, so that a rerun after a
# crash, a kill or a SLURM preemption (SIGTERM: a checkpoint is saved) resumes. A new
# generator.pt makes the face GAN start again (its old checkpoints no longer fit).

rule train_face:
    input:
        unpack(iuv_input("target")),
        frames="results/frames/{target}/frames.mjpeg",
        pose="results/pose_smooth/{target}.parquet",
        generator="results/models/{target}/generator.pt",
    output:
        face="results/models/{target}/face.pt",
        losses="results/models/{target}/face_loss.csv",
        curves=report(
            "results/models/{target}/face_loss.png",
            caption="../report/face_loss.rst",
            category="Training",
            subcategory="{target}",
        ),
        samples=report(
            "results/models/{target}/face_samples.png",
            caption="../report/face_samples.rst",
            category="Training",
            subcategory="{target}",
        ),
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.face),
        ckpt_dir=lambda wildcards, output: os.path.join(os.path.dirname(output.face), "face_checkpoints"),
        settings=settings("face"),
        iuv=iuv_flag,
    log:
        "logs/train_face/{target}.log",
    benchmark:
        "logs/benchmarks/train_face/{target}.tsv"
    threads: resources("face")["threads"]
    conda:
        "../../envs/gpu.yaml"
    resources:
        gpu=resources("face")["gpus"],
        mem_mb=resources("face")["mem_mb"],
        runtime=resources("face")["runtime"],
        cpus_per_task=resources("face")["cpus_per_task"],
    shell:
        logged(
            "python -m steps.gan.face --threads {threads} --frames {input.frames} --pose {input.pose}"
            " --generator {input.generator} --out-dir {params.out_dir} --ckpt-dir {params.ckpt_dir}"
            " --settings {params.settings:q} {params.iuv}"
        )
