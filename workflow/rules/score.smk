# The transfer scored: the detector run again on each transfer video (is the target person found,
# in the input pose?) beside its floor on the target's real frames; a table per transfer. A transfer
# in which the person is found in fewer than evaluate.min_person_found of the frames gets a
# WARNING in the log, repeated on the terminal (stderr), since the job itself still succeeds.


rule score_transfer:
    input:
        video="results/transfer/{source}__{target}.mp4",
        pose="results/normalized/{source}__{target}.parquet",
        target_frames="results/frames/{target}/frames.mjpeg",
        target_pose="results/pose_smooth/{target}.parquet",
    output:
        csv=report(
            "results/eval/{source}__{target}_transfer.csv",
            caption="../report/transfer_score.rst",
            category="Evaluation",
            subcategory="{source} → {target}",
        ),
        markdown="results/eval/{source}__{target}_transfer.md",
    params:
        settings=settings("evaluate"),
    log:
        "logs/score_transfer/{source}__{target}.log",
    benchmark:
        "logs/benchmarks/score_transfer/{source}__{target}.tsv"
    conda:
        "../../envs/cpu.yaml"
    # the work is pose detection (MediaPipe on the CPU): the pose section's resources
    threads: resources("pose")["threads"]
    resources:
        mem_mb=resources("pose")["mem_mb"],
        runtime=resources("pose")["runtime"],
    shell:
        logged(
            "python -m steps.evaluate.score --video {input.video} --pose {input.pose}"
            " --target-frames {input.target_frames} --target-pose {input.target_pose}"
            " --settings {params.settings:q} --title 'Transfer {wildcards.source} → {wildcards.target}'"
            " --csv {output.csv} --markdown {output.markdown}"
        )


# results/eval/{target}.csv (evaluate) also matches a transfer's table with target "{source}__{target}_transfer"
ruleorder: score_transfer > evaluate
