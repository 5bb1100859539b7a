# Per-subject statistics (steps.prepare.stats): the ankle positions and heights the normalization
# maps between, and how often the face and hands are found (a target warned when seldom).


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
        logged(
            "python -m steps.prepare.stats --pose {input.pose} --json {output.json} --table {output.table}"
            " --plot {output.plot} --coverage-plot {output.coverage} --settings {params.settings:q} {params.target}"
        )
