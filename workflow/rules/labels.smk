# Preview videos of label maps, so a person can look at what the generator will be given.
# With labels.iuv overlay or concat (backend densepose) the subject's previews show the skeleton
# over the coloured DensePose IUV image (the generator's extra channels can't be shown as RGB).
rule render_labels:
    input:
        unpack(
            lambda w: {"iuv": f"results/densepose/{w.subject}/iuv.npy"} if config["labels"]["iuv"] != "none" else {}
        ),
        pose="results/pose_smooth/{subject}.parquet",
    output:
        video=report(
            "results/labels/{subject}.mp4",
            caption="../report/labels.rst",
            category="Label maps",
        ),
    params:
        settings=settings("labels"),
        iuv=lambda wildcards, input: f"--iuv {input.iuv}" if "iuv" in input.keys() else "",
    log:
        "logs/render_labels/{subject}.log",
    benchmark:
        "logs/benchmarks/render_labels/{subject}.tsv"
    conda:
        "../../envs/cpu.yaml"
    resources:
        mem_mb=resources("labels")["mem_mb"],
        runtime=resources("labels")["runtime"],
    shell:
        logged(
            "python -m steps.prepare.labels --pose {input.pose} --out {output.video} --settings {params.settings:q}"
            " {params.iuv}"
        )


use rule render_labels as render_labels_normalized with:
    input:
        pose="results/normalized/{source}__{target}.parquet",
    output:
        video=report(
            "results/labels/normalized/{source}__{target}.mp4",
            caption="../report/labels_normalized.rst",
            category="Label maps",
        ),
    log:
        "logs/render_labels/{source}__{target}.log",
    benchmark:
        "logs/benchmarks/render_labels/{source}__{target}.tsv"
