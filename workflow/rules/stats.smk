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
        settings=settings("stats"),
        # coverage warnings only for transfer targets: their frames train the GANs
        target=lambda w: "--target" if w.subject in TARGETS else "",
    log:
        "logs/subject_stats/{subject}.log",
    benchmark:
        "logs/benchmarks/subject_stats/{subject}.tsv"
    conda:
        "../../envs/cpu.yaml"
    resources:
        mem_mb=resources("stats")["mem_mb"],
        runtime=resources("stats")["runtime"],
    shell:
        "python -m steps.stats --pose {input.pose} --json {output.json} --table {output.table}"
        " --plot {output.plot} --coverage-plot {output.coverage} --settings {params.settings:q} {params.target}"
        " > {log} 2>&1; grep '^WARNING' {log} >&2 || true"


rule normalize_pose:
    input:
        pose="results/pose_smooth/{source}.parquet",
        source_stats="results/stats/{source}.json",
        target_stats="results/stats/{target}.json",
    output:
        pose="results/normalized/{source}__{target}.parquet",
    params:
        settings=settings("normalize"),
        stats=settings("stats"),
    log:
        "logs/normalize_pose/{source}__{target}.log",
    benchmark:
        "logs/benchmarks/normalize_pose/{source}__{target}.tsv"
    conda:
        "../../envs/cpu.yaml"
    resources:
        mem_mb=resources("normalize")["mem_mb"],
        runtime=resources("normalize")["runtime"],
    shell:
        "python -m steps.normalize --pose {input.pose} --source-stats {input.source_stats}"
        " --target-stats {input.target_stats} --out {output.pose}"
        " --settings {params.settings:q} --stats-settings {params.stats:q} > {log} 2>&1"
