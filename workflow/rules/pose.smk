# DensePose's IUV images must line up with the working frames, so it always detects on them.
DETECT_ON = "frames" if DENSEPOSE else config["pose"]["detect_on"]


rule extract_pose:
    input:
        frames="results/frames/{subject}/frames.npy",
        manifest="results/frames/{subject}/manifest.parquet",
    output:
        chunk=temp("results/pose/chunks/{subject}/{chunk}.npz"),
    params:
        bounds=chunk_bounds,
        backend=config["pose"]["backend"],
        det=config["pose"]["min_detection_confidence"],
        track=config["pose"]["min_tracking_confidence"],
        options=POSE_OPTIONS,
        detect_on=DETECT_ON,
        max_side=config["pose"]["max_side"],
    log:
        "logs/extract_pose/{subject}/{chunk}.log",
    benchmark:
        "logs/benchmarks/extract_pose/{subject}_{chunk}.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    shell:
        "python -m steps.pose extract --store results/frames/{wildcards.subject} --start {params.bounds[start]}"
        " --end {params.bounds[end]} --out {output.chunk} --backend {params.backend}"
        " --detect-on {params.detect_on} --max-side {params.max_side}"
        " --subject {wildcards.subject} --min-detection-confidence {params.det}"
        " --min-tracking-confidence {params.track} --options {params.options} > {log} 2>&1"


rule merge_pose:
    input:
        chunks=pose_chunk_files,
        manifest="results/frames/{subject}/manifest.parquet",
    output:
        pose="results/pose/{subject}.parquet",
    params:
        backend=config["pose"]["backend"],
        max_hand_offset=config["pose"]["max_hand_offset"],
    log:
        "logs/merge_pose/{subject}.log",
    conda:
        "../../envs/cpu.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m steps.pose merge {input.chunks} --manifest {input.manifest} --out {output.pose}"
        " --subject {wildcards.subject} --backend {params.backend}"
        " --max-hand-offset {params.max_hand_offset} > {log} 2>&1"


# DensePose's IUV images travel in the pose chunks (backend densepose); this joins them.
rule merge_densepose:
    input:
        chunks=pose_chunk_files,
        pose="results/pose/{subject}.parquet",
    output:
        iuv="results/densepose/{subject}/iuv.npy",
        index="results/densepose/{subject}/index.parquet",
    log:
        "logs/merge_densepose/{subject}.log",
    conda:
        "../../envs/cpu.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m steps.backends.densepose merge {input.chunks} --out-dir results/densepose/{wildcards.subject}"
        " --subject {wildcards.subject} --pose {input.pose} > {log} 2>&1"


rule smooth_pose:
    input:
        pose="results/pose/{subject}.parquet",
    output:
        pose="results/pose_smooth/{subject}.parquet",
    params:
        c=config["smooth"],
    log:
        "logs/smooth_pose/{subject}.log",
    conda:
        "../../envs/cpu.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m steps.smooth --pose {input.pose} --out {output.pose} --method {params.c[method]}"
        " --window {params.c[window]} --sigma {params.c[sigma]} --max-gap {params.c[max_gap]}"
        " --min-confidence {params.c[min_confidence]}"
        " --one-euro-min-cutoff {params.c[one_euro_min_cutoff]}"
        " --one-euro-beta {params.c[one_euro_beta]} > {log} 2>&1"
