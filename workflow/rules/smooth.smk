# Temporal smoothing of each subject's merged pose table (steps.prepare.smooth): short gaps filled,
# jitter filtered, before statistics, normalization and label maps read it.


rule smooth_pose:
    input:
        pose="results/pose/{subject}.parquet",
    output:
        pose="results/pose_smooth/{subject}.parquet",
    params:
        settings=settings("smooth"),
    log:
        "logs/smooth_pose/{subject}.log",
    benchmark:
        "logs/benchmarks/smooth_pose/{subject}.tsv"
    conda:
        "../../envs/cpu.yaml"
    resources:
        mem_mb=resources("smooth")["mem_mb"],
        runtime=resources("smooth")["runtime"],
    shell:
        logged(
            "python -m steps.prepare.smooth --pose {input.pose} --out {output.pose} --settings {params.settings:q}"
        )
