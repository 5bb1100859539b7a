# decode_frames is a checkpoint: the number of pose chunks depends on the decoded frame count.
# The video's fingerprint (its size and first and last megabyte) is a param, so a different video
# at the same path is decoded again, with everything after it, whatever its timestamp.
checkpoint decode_frames:
    input:
        video=subject_video,
    output:
        frames="results/frames/{subject}/frames.mjpeg",
        manifest="results/frames/{subject}/manifest.parquet",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.frames),
        trim=lambda w: f"--start {subject_cfg(w).get('start', 0)}"
        + (f" --end {subject_cfg(w)['end']}" if subject_cfg(w).get("end") is not None else ""),
        settings=settings("frames"),
        video_fingerprint=lambda w: video_identity(subject_video(w)),
    log:
        "logs/decode_frames/{subject}.log",
    benchmark:
        "logs/benchmarks/decode_frames/{subject}.tsv"
    threads: resources("frames")["threads"]
    conda:
        "../../envs/cpu.yaml"
    resources:
        mem_mb=resources("frames")["mem_mb"],
        runtime=resources("frames")["runtime"],
    shell:
        logged(
            "python -m steps.prepare.frames --video {input.video:q} --out {params.out_dir} --subject {wildcards.subject}"
            " {params.trim} --settings {params.settings:q}"
        )
