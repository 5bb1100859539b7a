# decode_frames is a checkpoint: the number of pose chunks depends on the decoded frame count.
checkpoint decode_frames:
    input:
        video=subject_video,
    output:
        frames="results/frames/{subject}/frames.npy",
        manifest="results/frames/{subject}/manifest.parquet",
    params:
        start=lambda w: subject_cfg(w).get("start", 0),
        end=lambda w: (
            f"--end {subject_cfg(w)['end']}" if subject_cfg(w).get("end") is not None else ""
        ),
        fps=config["frames"]["fps"],
        width=config["frames"]["width"],
        height=config["frames"]["height"],
        resize=config["frames"]["resize"],
    log:
        "logs/decode_frames/{subject}.log",
    conda:
        "../../envs/cpu.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m steps.frames --video {input.video:q} --out results/frames/{wildcards.subject}"
        " --subject {wildcards.subject} --fps {params.fps} --width {params.width}"
        " --height {params.height} --resize {params.resize} --start {params.start} {params.end}"
        " > {log} 2>&1"
