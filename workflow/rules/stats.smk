rule subject_stats:
    input:
        pose="results/pose_smooth/{subject}.parquet",
    output:
        json="results/stats/{subject}.json",
        table="results/stats/{subject}_frames.parquet",
        plot=report(
            "results/stats/{subject}.png",
            caption="../report/stats.rst",
            category="Subject statistics",
        ),
        coverage=report(
            "results/stats/{subject}_coverage.png",
            caption="../report/coverage.rst",
            category="Subject statistics",
        ),
    params:
        c=config["stats"],
        # coverage warnings only for transfer targets: their frames train the GANs
        warn=lambda w: (
            f"--warn-face-below {config['stats']['warn_face_below']}"
            f" --warn-hands-below {config['stats']['warn_hands_below']}"
            if w.subject in TARGETS
            else ""
        ),
    log:
        "logs/subject_stats/{subject}.log",
    conda:
        "../../envs/cpu.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python -m steps.stats --pose {input.pose} --json {output.json} --table {output.table}"
        " --plot {output.plot} --min-confidence {params.c[min_confidence]}"
        " --far-percentile {params.c[far_percentile]}"
        " --close-percentile {params.c[close_percentile]} --band {params.c[band]}"
        " --coverage-plot {output.coverage} {params.warn} > {log} 2>&1;"
        " grep '^WARNING' {log} >&2 || true"


rule normalize_pose:
    input:
        pose="results/pose_smooth/{source}.parquet",
        source_stats="results/stats/{source}.json",
        target_stats="results/stats/{target}.json",
    output:
        pose="results/normalized/{source}__{target}.parquet",
    params:
        c=config["normalize"],
        min_conf=config["stats"]["min_confidence"],
    log:
        "logs/normalize_pose/{source}__{target}.log",
    conda:
        "../../envs/cpu.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python -m steps.normalize --pose {input.pose} --source-stats {input.source_stats}"
        " --target-stats {input.target_stats} --out {output.pose}"
        " --smooth-window {params.c[smooth_window]} --horizontal {params.c[horizontal]}"
        " --min-confidence {params.min_conf} > {log} 2>&1"
