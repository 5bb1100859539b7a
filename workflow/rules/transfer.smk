# The target performing the source's dance: normalized source poses -> label maps -> the
# generator (recurrent) -> the face GAN -> an H.264 video at the source's frame rate with the
# source's audio, a side-by-side video (source | label map | result), PNG stills and a per-frame
# CSV (which frames held the last detected pose).


rule transfer:
    input:
        # face.pt only when the face GAN is enabled; with labels.iuv concat the source's IUV
        # images and its poses before normalization (the IUV follows the normalized poses)
        unpack(
            lambda w: {
                **({"face": f"results/models/{w.target}/face.pt"} if config["face"]["enabled"] else {}),
                **(
                    {
                        "source_iuv": f"results/densepose/{w.source}/iuv.npy",
                        "source_pose": f"results/pose_smooth/{w.source}.parquet",
                    }
                    if IUV_CONCAT
                    else {}
                ),
            }
        ),
        pose="results/normalized/{source}__{target}.parquet",
        generator="results/models/{target}/generator.pt",
        source_frames="results/frames/{source}/frames.mjpeg",
        source_manifest="results/frames/{source}/manifest.parquet",
    output:
        video="results/transfer/{source}__{target}.mp4",
        side_by_side=report(
            "results/transfer/{source}__{target}_side_by_side.mp4",
            caption="../report/transfer_video.rst",
            category="Transfer",
            subcategory="{source} → {target}",
        ),
        stills=report(
            directory("results/transfer/{source}__{target}_stills"),
            patterns=["{name}.png"],
            caption="../report/transfer_stills.rst",
            category="Transfer",
            subcategory="{source} → {target}",
        ),
        frames_csv="results/transfer/{source}__{target}_frames.csv",
    params:
        face=lambda wildcards, input: f"--face {input.face}" if "face" in input.keys() else "",
        iuv=lambda wildcards, input: (
            f"--source-iuv {input.source_iuv} --source-pose {input.source_pose}" if IUV_CONCAT else ""
        ),
        settings=settings("transfer"),
    log:
        "logs/transfer/{source}__{target}.log",
    benchmark:
        "logs/benchmarks/transfer/{source}__{target}.tsv"
    threads: resources("transfer")["threads"]
    conda:
        "../../envs/gpu.yaml"
    resources:
        gpu=resources("transfer")["gpus"],
        mem_mb=resources("transfer")["mem_mb"],
        runtime=resources("transfer")["runtime"],
    shell:
        logged(
            "python -m steps.render.transfer --threads {threads} --pose {input.pose} --generator {input.generator} {params.face} {params.iuv}"
            " --source-frames {input.source_frames} --source-manifest {input.source_manifest}"
            " --out {output.video} --side-by-side {output.side_by_side} --stills {output.stills}"
            " --frames-csv {output.frames_csv} --settings {params.settings:q}"
        )
