# decode_frames is a checkpoint: the number of pose chunks depends on the decoded frame count.
# Its warnings (a trim past the video's end) are repeated on the terminal.
checkpoint decode_frames:
    input:
        video=subject_video,
    output:
        frames="results/frames/{subject}/frames.npy",
        manifest="results/frames/{subject}/manifest.parquet",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.frames),
        trim=lambda w: f"--start {subject_cfg(w).get('start', 0)}"
        + (f" --end {subject_cfg(w)['end']}" if subject_cfg(w).get("end") is not None else ""),
        settings=settings("frames"),
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
        "python -m steps.frames --video {input.video:q} --out {params.out_dir} --subject {wildcards.subject}"
        " {params.trim} --settings {params.settings:q} > {log} 2>&1; grep '^WARNING' {log} >&2 || true"
