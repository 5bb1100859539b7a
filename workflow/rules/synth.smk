# render_synth: the project's own dancers (steps/synth/), a video and its ground-truth pose
# table, for the demo and for tests on a fresh clone. Each entry of `synth:` names one subject;
# point `subjects: {name: {video: results/synth/{name}.mp4}}` at it to run the pipeline on it.
SYNTH = config.get("synth") or {}


rule render_synth:
    output:
        video="results/synth/{name}.mp4",
        truth="results/synth/{name}_truth.parquet",
    wildcard_constraints:
        name="|".join(SYNTH) or "^$",
    params:
        preset=lambda w: SYNTH[w.name]["preset"],
        seconds=lambda w: SYNTH[w.name].get("seconds", 10),
        seed=lambda w: SYNTH[w.name].get("seed", 0),
        fps=lambda w: SYNTH[w.name].get("fps") or config["frames"]["fps"],
        width=config["frames"]["width"],
        height=config["frames"]["height"],
    log:
        "logs/synth/{name}.log",
    benchmark:
        "logs/benchmarks/render_synth/{name}.tsv"
    conda:
        "../../envs/cpu.yaml"
    threads: 1
    # a rendered video is made like a decoded one: the frames section's resources
    resources:
        mem_mb=resources("frames")["mem_mb"],
        runtime=resources("frames")["runtime"],
    shell:
        logged(
            "python -m steps.synth --preset {params.preset} --seconds {params.seconds}"
            " --fps {params.fps} --width {params.width} --height {params.height}"
            " --seed {params.seed} --subject {wildcards.name}"
            " --video {output.video:q} --truth {output.truth:q}"
        )
