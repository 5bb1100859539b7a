"""Inference throughput (issue 14): frames/s of each stage of transfer alone and of transfer end
to end, in one run, so the slowest stage is plain and `vs generator` shows what the stages
cost end to end:

  label maps          the generator's label maps, rendered by two threads as transfer does
  generator           steps.render.inference.generate_sequence over those maps, recurrent
  generator + face    the same with the face GAN on the device (--face)
  encode transfer     H.264 of the generated frames (steps.prepare.video.write_video)
  side-by-side        composing label | result panels and their H.264, as transfer's writer does
  end to end          steps.render.transfer.transfer: pose table -> ... -> both videos (with the face
                      GAN with --face); it includes loading the models and starting ffmpeg

`vs generator` is frames/s over the generator's (generator + face with --face): end to end at
1.0 means the renderer and the encoders are fully hidden behind the GPU.

The networks are untrained (weights do not change the speed), built with steps.gan.models from
ModelConfig.paper(...) (FaceModelConfig for G_f) and saved as generator.pt / face.pt in the
format steps/render/inference.py documents, with train.bf16 = --bf16, so every row runs in the same
precision. The poses are a rendered dancer's (steps.synth).

    python benchmarks/transfer.py --face                              # CPU: tiny, seconds
    python benchmarks/transfer.py --device cuda --size 1024x512 --paper --face --bf16 --frames 240
    python benchmarks/transfer.py ... --no-encode   # a machine without ffmpeg: the first three rows only
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import markdown  # noqa: E402

COLUMNS = ["size", "path", "device", "bf16", "frames", "seconds", "frames/s", "vs generator"]
TINY = dict(ngf=8, n_down=2, n_blocks=1, ndf=8, n_layers_D=2, num_D=1)


def save_generator(path: Path, width: int, height: int, paper: bool, bf16: bool) -> dict:
    from steps.gan.models import ModelConfig, build_generator, label_channels
    from steps.settings import section

    labels = section("labels")  # the defaults: with the background (labels.background), as train writes it
    mcfg = ModelConfig.paper(**({} if paper else TINY), label_ch=label_channels(False, labels["background"]),
                             composite=labels["background"])
    torch.manual_seed(0)
    g = build_generator(mcfg)
    torch.save({"model": asdict(mcfg), "state_dict": g.state_dict(), "height": height, "width": width,
                "labels": labels, "held_out_from": 0, "step": 0, "train": section("train") | {"bf16": bf16},
                "background": torch.full((height, width, 3), 128, dtype=torch.uint8)}, path)
    return asdict(mcfg)


def save_face(path: Path, width: int, height: int, paper: bool, bf16: bool) -> dict:
    """An untrained G_f as steps.gan.face writes face.pt (its zero head changes no pixel, but it runs)."""
    from steps.prepare.faceboxes import face_size
    from steps.gan.models import FaceGenerator, FaceModelConfig
    from steps.settings import section

    face = section("face")
    fcfg = FaceModelConfig(**(face["model"] if paper else TINY))
    torch.manual_seed(0)
    g = FaceGenerator(fcfg)
    torch.save({"model": asdict(fcfg), "state_dict": g.state_dict(), "boxes": face["boxes"],
                "size": face_size(height, width, face["boxes"]["size"]), "height": height, "width": width,
                "step": 0, "generator_sha1": "", "train": face | {"bf16": bf16}}, path)
    return asdict(fcfg)


class Timer:
    """Rows of seconds and frames/s, each stage timed with the device drained before and after."""

    def __init__(self, device: torch.device, size: str, bf16: bool):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.common = {"size": size, "device": str(device), "bf16": bf16}
        self.rows: list[dict] = []

    def run(self, path: str, work) -> list:
        """work() -> the stage's outputs (a list, or the frame count); times it and adds a row."""
        self.sync()
        t0 = time.perf_counter()
        out = work()
        self.sync()
        dt = time.perf_counter() - t0
        n = out if isinstance(out, int) else len(out)
        self.rows.append(self.common | {"path": path, "frames": n, "seconds": dt, "frames/s": n / dt})
        return out

    def relative_to(self, path: str) -> float:
        """Adds `vs generator` (frames/s over `path`'s) to every row; returns end to end's."""
        ref = next(r["frames/s"] for r in self.rows if r["path"] == path)
        for r in self.rows:
            r["vs generator"] = r["frames/s"] / ref
        return self.rows[-1]["vs generator"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="128x64", help="WxH of the generator (label maps)")
    ap.add_argument("--frames", type=int, default=16, help="frames to generate")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--paper", action="store_true", help="the paper's networks (default: tiny ones)")
    ap.add_argument("--face", action="store_true", help="add the face GAN (untrained) to the generator and end to end")
    ap.add_argument("--bf16", action="store_true", help="models saved as trained with bf16: autocast on CUDA")
    ap.add_argument("--no-encode", action="store_true",
                    help="stop after the generator rows (no H.264: a machine without ffmpeg)")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    from steps.render.streaming import ordered_map
    from steps.prepare.faceboxes import face_boxes
    from steps.render.inference import FaceRefiner, generate_sequence, label_renderer, load_face, load_generator, pick_device
    from steps.prepare.posetable import write_pose
    from steps.synth import make_clip

    dev = pick_device(a.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as transfer runs
    w, h = (int(v) for v in a.size.lower().split("x"))
    fps = 25.0
    timer = Timer(dev, a.size, a.bf16)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mcfg = save_generator(tmp / "generator.pt", w, h, a.paper, a.bf16)
        fcfg = save_face(tmp / "face.pt", w, h, a.paper, a.bf16) if a.face else None
        clip = make_clip("source", a.frames / fps, fps, w, h, 0)
        pose = clip.truth("source", "source")
        write_pose(pose, tmp / "pose.parquet")
        g, meta = load_generator(tmp / "generator.pt", dev)
        render = label_renderer(meta)
        face = None
        if a.face:
            face_g, fmeta = load_face(tmp / "face.pt", dev)
            b = fmeta["boxes"]
            boxes = face_boxes(pose, h, w, fmeta["size"], b["smooth_window"], b["min_confidence"])
            face = FaceRefiner(face_g, boxes.boxes, a.bf16)
        for _ in generate_sequence(g, [render(pose, 0)] * 2, dev, bf16=a.bf16, face=face):  # warm-up (cuDNN, allocator)
            pass

        labels = timer.run("label maps", lambda: list(ordered_map(lambda i: render(pose, i), range(pose.n_frames))))
        frames = timer.run("generator", lambda: list(generate_sequence(g, labels, dev, bf16=a.bf16)))
        if face is not None:
            timer.run("generator + face", lambda: list(generate_sequence(g, labels, dev, bf16=a.bf16, face=face)))
        if not a.no_encode:
            encoders(timer, tmp, labels, frames, fps, dev, a.face)
    ratio = timer.relative_to("generator + face" if a.face else "generator")
    print(f"torch {torch.__version__}; generator {mcfg}; face {fcfg}; {w * h} px label maps")
    print(markdown(timer.rows, COLUMNS))
    if not a.no_encode:
        print(f"end to end / {'generator + face' if a.face else 'generator'} alone: {ratio:.2f} "
              f"(1.0: the label renderer and the encoders are fully hidden)")


def encoders(timer: Timer, tmp: Path, labels, frames, fps: float, dev, face: bool) -> None:
    """The rows that need ffmpeg: both encoders alone and transfer end to end."""
    from steps.render.transfer import panels, transfer
    from steps.prepare.video import write_video

    timer.run("encode transfer", lambda: write_video(tmp / "enc.mp4", frames, fps))
    items = [(i, lab, f) for i, (lab, f) in enumerate(zip(labels, frames))]
    held = np.zeros(len(items), bool)
    timer.run("side-by-side", lambda: write_video(tmp / "sbs_enc.mp4", panels(items, None, held, set(), tmp), fps))
    timer.run("end to end", lambda: transfer(tmp / "pose.parquet", tmp / "generator.pt", tmp / "out.mp4",
                                             tmp / "sbs.mp4", tmp / "stills", tmp / "frames.csv",
                                             face_path=tmp / "face.pt" if face else None, device=str(dev),
                                             progress=False)["frames"])


if __name__ == "__main__":
    main()
