# Reconstruction of each target's held-out frames (the tail train_generator never trains on) from
# their own poses: the paper's table as CSV and Markdown, and a grid of samples. With
# evaluate.ablation a second generator is trained without temporal smoothing for the table's
# first row (train_generator_no_temporal in train.smk: same settings otherwise, its own checkpoints).

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
        frames="results/frames/{target}/frames.mjpeg",
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
        settings=settings("evaluate"),
        boxes=json.dumps(config["face"]["boxes"]),
    log:
        "logs/evaluate/{target}.log",
    benchmark:
        "logs/benchmarks/evaluate/{target}.tsv"
    threads: resources("evaluate")["threads"]
    conda:
        "../../envs/gpu.yaml"
    resources:
        gpu=resources("evaluate")["gpus"],
        mem_mb=resources("evaluate")["mem_mb"],
        runtime=resources("evaluate")["runtime"],
    shell:
        logged(
            "python -m steps.evaluate.reconstruction --threads {threads} --frames {input.frames} --pose {input.pose}"
            " --generator {input.generator} {params.face} {params.no_temporal} {params.iuv}"
            " --settings {params.settings:q} --boxes {params.boxes:q} --title 'Reconstruction of {wildcards.target}'"
            " --csv {output.csv} --markdown {output.markdown} --grid {output.grid}"
        )
