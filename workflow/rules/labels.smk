# Preview videos of label maps, so a person can look at what the generator will be given.
rule render_labels:
    input:
        pose="results/pose_smooth/{subject}.parquet",
    output:
        video="results/labels/{subject}.mp4",
    params:
        flags=LABEL_FLAGS,
    log:
        "logs/render_labels/{subject}.log",
    conda:
        "../../envs/cpu.yaml"
    resources:
        mem_mb=1000,
        runtime=20,
    shell:
        "python -m steps.labels --pose {input.pose} --out {output.video} {params.flags} > {log} 2>&1"


use rule render_labels as render_labels_normalized with:
    input:
        pose="results/normalized/{source}__{target}.parquet",
    output:
        video="results/labels/normalized/{source}__{target}.mp4",
    log:
        "logs/render_labels/{source}__{target}.log",
