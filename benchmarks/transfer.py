"""Inference throughput (issue 14): frames/s of the generator alone (steps.generator.
generate_sequence over N label maps, recurrent as transfer runs it) and end to end
(steps.transfer.transfer: pose table -> label maps -> generator -> H.264 + side-by-side video).

The generator is untrained (weights do not change the speed), built with steps.models.
build_generator from ModelConfig.paper(...) and saved as generator.pt in the format
steps/generator.py documents. The poses are a rendered dancer's (steps.synth).

    python benchmarks/transfer.py                                     # CPU: tiny, seconds
    python benchmarks/transfer.py --device cuda --size 1024x512 --paper --frames 120
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import markdown  # noqa: E402

COLUMNS = ["size", "path", "device", "bf16", "frames", "seconds", "frames/s"]


def save_generator(path: Path, width: int, height: int, paper: bool) -> dict:
    from steps.models import ModelConfig, build_generator
    from steps.settings import section

    kw = {} if paper else dict(ngf=8, n_down=2, n_blocks=1, ndf=8, n_layers_D=2, num_D=1)
    mcfg = ModelConfig.paper(**kw)
    torch.manual_seed(0)
    g = build_generator(mcfg)
    from dataclasses import asdict

    torch.save({"model": asdict(mcfg), "state_dict": g.state_dict(), "height": height, "width": width,
                "labels": section("labels"), "held_out_from": 0, "step": 0}, path)
    return asdict(mcfg)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="128x64", help="WxH of the generator (label maps)")
    ap.add_argument("--frames", type=int, default=16, help="frames to generate")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--paper", action="store_true", help="the paper's networks (default: a tiny one)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the generator-alone row (CUDA)")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    import numpy as np

    from steps.generator import generate_sequence, label_renderer, load_generator, pick_device
    from steps.posetable import write_pose
    from steps.synth import make_clip
    from steps.transfer import transfer

    dev = pick_device(a.device)
    w, h = (int(v) for v in a.size.lower().split("x"))
    fps = 25.0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mcfg = save_generator(tmp / "generator.pt", w, h, a.paper)
        clip = make_clip("source", a.frames / fps, fps, w, h, 0)
        pose = clip.truth("source", "source")
        write_pose(pose, tmp / "pose.parquet")
        g, meta = load_generator(tmp / "generator.pt", dev)
        render = label_renderer(meta)
        labels = [render(pose, i) for i in range(pose.n_frames)]
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        for _ in generate_sequence(g, labels[:2], device=dev, bf16=a.bf16):  # warm-up (cuDNN, allocator)
            pass
        sync()
        t0 = time.perf_counter()
        n = sum(1 for _ in generate_sequence(g, labels, device=dev, bf16=a.bf16))
        sync()
        dt = time.perf_counter() - t0
        rows.append({"size": a.size, "path": "generator", "device": str(dev), "bf16": a.bf16, "frames": n,
                     "seconds": dt, "frames/s": n / dt})
        t0 = time.perf_counter()
        info = transfer(tmp / "pose.parquet", tmp / "generator.pt", tmp / "out.mp4", tmp / "sbs.mp4", tmp / "stills",
                        tmp / "frames.csv", device=str(dev), progress=False)
        dt = time.perf_counter() - t0
        rows.append({"size": a.size, "path": "end to end", "device": str(dev), "bf16": False,
                     "frames": info["frames"], "seconds": dt, "frames/s": info["frames"] / dt})
    print(f"torch {torch.__version__}; generator {mcfg}; {np.prod([w, h])} px label maps")
    print(markdown(rows, COLUMNS))


if __name__ == "__main__":
    main()
