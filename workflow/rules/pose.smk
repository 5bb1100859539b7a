# Pose detection in chunks of pose.chunk_frames frames, one job each (they run in parallel), then
# merged into the subject's pose table (and DensePose's IUV store). Each step reads the pose section.
rule extract_pose:
    input:
        frames="results/frames/{subject}/frames.mjpeg",
        manifest="results/frames/{subject}/manifest.parquet",
    output:
        chunk=temp("results/pose/chunks/{subject}/{chunk}.npz"),
    params:
        store=lambda wildcards, input: os.path.dirname(input.frames),
        bounds=chunk_bounds,
        settings=settings("pose"),
    log:
        "logs/extract_pose/{subject}/{chunk}.log",
    benchmark:
        "logs/benchmarks/extract_pose/{subject}_{chunk}.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: resources("pose")["threads"]
    resources:
        mem_mb=resources("pose")["mem_mb"],
        runtime=resources("pose")["runtime"],
    shell:
        logged(
            "python -m steps.prepare.pose extract --store {params.store} --start {params.bounds[start]}"
            " --end {params.bounds[end]} --out {output.chunk} --subject {wildcards.subject}"
            " --settings {params.settings:q}"
        )


rule merge_pose:
    input:
        chunks=pose_chunk_files,
        manifest="results/frames/{subject}/manifest.parquet",
    output:
        pose="results/pose/{subject}.parquet",
    params:
        settings=settings("pose"),
    log:
        "logs/merge_pose/{subject}.log",
    benchmark:
        "logs/benchmarks/merge_pose/{subject}.tsv"
    conda:
        "../../envs/cpu.yaml"
    resources:
        mem_mb=resources("pose")["mem_mb"],
        runtime=resources("pose")["runtime"],
    shell:
        logged(
            "python -m steps.prepare.pose merge {input.chunks} --manifest {input.manifest} --out {output.pose}"
            " --subject {wildcards.subject} --settings {params.settings:q}"
        )


# DensePose's IUV images travel in the pose chunks (backend densepose); this joins them.
rule merge_densepose:
    input:
        chunks=pose_chunk_files,
        pose="results/pose/{subject}.parquet",
    output:
        iuv="results/densepose/{subject}/iuv.npy",
        index="results/densepose/{subject}/index.parquet",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.iuv),
    log:
        "logs/merge_densepose/{subject}.log",
    benchmark:
        "logs/benchmarks/merge_densepose/{subject}.tsv"
    conda:
        "../../envs/cpu.yaml"
    resources:
        mem_mb=resources("pose")["mem_mb"],
        runtime=resources("pose")["runtime"],
    shell:
        logged(
            "python -m steps.prepare.backends.densepose merge {input.chunks} --out-dir {params.out_dir}"
            " --subject {wildcards.subject} --pose {input.pose}"
        )
