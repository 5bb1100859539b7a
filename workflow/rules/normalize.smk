# Global pose normalization (the paper's section 3.2): the source's poses mapped onto the target's
# far/close ankle positions and heights, one mapping per source-target pair, or per shot of a source
# joined from clips (normalize.shots); the shots and their mappings in the .shots.json beside it.


rule normalize_pose:
    input:
        pose="results/pose_smooth/{source}.parquet",
        frames="results/frames/{source}/frames.mjpeg",
        source_stats="results/stats/{source}.json",
        target_stats="results/stats/{target}.json",
    output:
        pose="results/normalized/{source}__{target}.parquet",
        shots="results/normalized/{source}__{target}.shots.json",
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
        logged(
            "python -m steps.prepare.normalize --pose {input.pose} --source-stats {input.source_stats}"
            " --target-stats {input.target_stats} --frames {input.frames} --out {output.pose} --shots {output.shots}"
            " --settings {params.settings:q} --stats-settings {params.stats:q}"
        )
