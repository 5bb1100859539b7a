"""transfer (CPU, tiny): the transfer video's frames, rate, size and codec read back with PyAV;
the source's audio (trimmed like the frames) when it has some; held poses; side-by-side; stills."""
from __future__ import annotations

import json
import subprocess
import threading

import av
import cv2
import numpy as np
import pandas as pd
import pytest

from steps.prepare.framestore import open_frames
from steps.gan.face import FaceTrainConfig, train_face
from steps.prepare.frames import decode_frames
from steps.prepare.posetable import PoseArrays, read_pose, write_pose
from steps.synth import make_clip
from steps.gan.train import TrainConfig, train
from steps.render.transfer import HELD_COLOUR, hold_missing, main, side_by_side, transfer
from steps.prepare.video import FFMPEG, probe, write_video

SIZE = 128  # frames of both subjects
GEN = 64    # the generator's training size (half)


def stream_facts(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(video=0))
        facts = {"frames": n, "fps": float(v.average_rate), "width": v.codec_context.width,
                 "height": v.codec_context.height, "codec": v.codec_context.name,
                 "pix_fmt": v.codec_context.pix_fmt, "audio": [a.codec_context.name for a in c.streams.audio]}
        facts["duration"] = float(c.duration / 1e6) if c.duration else None
    return facts


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("transfer")
    clip = make_clip("target", 2.0, 10, SIZE, SIZE, seed=4)
    np.save(d / "frames.npy", np.stack(list(clip.frames())))
    pose = clip.truth("tgt", "target")
    cfg = TrainConfig.from_dict(dict(model=dict(ngf=8, n_down=2, n_blocks=1, ndf=8, n_layers_D=2, num_D=1), vgg=False,
                                     workers=0, global_steps=4, width=GEN, height=GEN, val_fraction=0.2, val_every=0, min_train_frames=2, min_val_frames=1,
                                     checkpoint_every=0, channels_last=False, device="cpu"))
    train(cfg, d / "frames.npy", pose, d / "m", d / "m/ck", progress=False)
    fcfg = FaceTrainConfig.from_dict(dict(steps=2, batch_size=2, model=dict(ngf=8, n_down=2, n_blocks=1, ndf=8,
                                     n_layers_D=2, num_D=1), vgg=False, val_every=0, checkpoint_every=0, device="cpu"))
    train_face(fcfg, d / "frames.npy", pose, d / "m/generator.pt", d / "m", d / "m/fck", progress=False)
    return d / "m/generator.pt", d / "m/face.pt"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A rendered source dancer with a 440 Hz tone as its audio, decoded from 0.5 s on like
    decode_frames does for `start: 0.5`, and its poses for the decoded frames."""
    d = tmp_path_factory.mktemp("source")
    clip = make_clip("source", 3.0, 10, SIZE, SIZE, seed=5)
    write_video(d / "silent.mp4", clip.frames(), 10)
    subprocess.run([FFMPEG, "-loglevel", "error", "-i", str(d / "silent.mp4"), "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=3", "-c:v", "copy", "-c:a", "aac", "-shortest",
                    str(d / "src.mp4")], check=True)
    n = decode_frames(str(d / "src.mp4"), d / "frames", 10, SIZE, SIZE, start=0.5, progress=False)
    truth = clip.truth("src", "source")
    pose = PoseArrays({k: v[5:5 + n].copy() for k, v in truth.parts.items()}, truth.time_s[:n], truth.meta)
    write_pose(pose, d / "pose.parquet")
    return d, n


def test_hold_missing_holds_the_last_detected_pose():
    pose = read_pose_like(8)
    body = pose.parts["body"]
    body[:, :, 0] += np.arange(8)[:, None]  # every frame different
    for f in (0, 1, 4, 5):
        body[f, :, :2], body[f, :, 2] = np.nan, 0
    body[6, 10:] = np.nan  # only 10 joints left: still detected with min_joints 8
    out, held, pose_from = hold_missing(pose, min_joints=8)
    assert held.tolist() == [True, True, False, False, True, True, False, False]
    assert pose_from.tolist() == [2, 2, 2, 3, 3, 3, 6, 7]  # leading frames take the first detected pose
    for i, j in enumerate(pose_from):
        np.testing.assert_array_equal(out.parts["body"][i], pose.parts["body"][j])
        np.testing.assert_array_equal(out.parts["left_hand"][i], pose.parts["left_hand"][j])
    for f in range(8):
        body[f, :, :2], body[f, :, 2] = np.nan, 0
    with pytest.raises(ValueError, match="nothing to transfer"):
        hold_missing(pose)


def read_pose_like(n):
    from steps.prepare.posetable import PoseMeta, empty_arrays

    pose = empty_arrays(n, PoseMeta("s", 64, 64, 10.0, "test"))
    pose.parts["body"][..., 0] = np.linspace(10, 50, 25)
    pose.parts["body"][..., 1] = np.linspace(5, 60, 25)
    pose.parts["body"][..., 2] = 1
    return pose


def test_held_frames_are_marked_on_the_label_panel():
    src = np.zeros((128, 96, 3), np.uint8)
    lab = np.zeros((64, 64, 3), np.uint8)
    res = np.full((64, 64, 3), 50, np.uint8)
    a = side_by_side(src, lab, res, held=False)
    b = side_by_side(src, lab, res, held=True)
    assert a.shape == b.shape == (64, 48 + 64 + 64, 3)
    label_panel = b[:, 48:112]
    assert (label_panel == HELD_COLOUR).all(-1).sum() > 100 and not (a[:, 48:112] == HELD_COLOUR).all(-1).any()
    np.testing.assert_array_equal(a[:, 112:], res)


def test_transfer_video_frames_rate_size_codec_and_trimmed_audio(models, source, tmp_path):
    gen, face = models
    d, n = source
    # two frames lose the person: they hold the last detected pose
    pose = read_pose(d / "pose.parquet")
    pose.parts["body"][7:9, :, :2], pose.parts["body"][7:9, :, 2] = np.nan, 0
    write_pose(pose, tmp_path / "pose.parquet")
    out = tmp_path / "out.mp4"
    main(["--pose", str(tmp_path / "pose.parquet"), "--generator", str(gen), "--face", str(face),
          "--source-frames", str(d / "frames/frames.mjpeg"), "--source-manifest", str(d / "frames/manifest.parquet"),
          "--out", str(out), "--side-by-side", str(tmp_path / "sbs.mp4"), "--stills", str(tmp_path / "stills"),
          "--frames-csv", str(tmp_path / "frames.csv"), "--settings", json.dumps({"stills": 3}), "--threads", "1"])
    f = stream_facts(out)
    assert (f["frames"], f["fps"], f["width"], f["height"], f["codec"], f["pix_fmt"]) == (n, 10.0, GEN, GEN, "h264", "yuv420p")
    assert f["audio"] == ["aac"]
    assert abs(f["duration"] - n / 10) < 0.15  # the audio is cut to the video: 2.5 s from 0.5 s on
    s = stream_facts(tmp_path / "sbs.mp4")
    assert (s["frames"], s["width"], s["height"], s["codec"]) == (n, 3 * GEN, GEN, "h264")
    assert len(list((tmp_path / "stills").glob("still_*.png"))) == 3
    per_frame = pd.read_csv(tmp_path / "frames.csv")
    assert per_frame["held"].tolist() == [i in (7, 8) for i in range(n)]
    assert per_frame["pose_from"].tolist()[6:10] == [6, 6, 6, 9]


def test_a_source_video_changed_since_decoding_gives_no_audio_and_says_why(models, source, tmp_path, caplog):
    """The audio must be the frames' own: a different video now at the source's path is not used."""
    import shutil

    gen, _ = models
    d, n = source
    store = tmp_path / "frames"
    shutil.copytree(d / "frames", store)
    video = tmp_path / "src.mp4"
    shutil.copy(d / "src.mp4", video)
    import pyarrow.parquet as pq
    table = pq.read_table(store / "manifest.parquet")
    meta = json.loads(table.schema.metadata[b"edn"])
    pq.write_table(table.replace_schema_metadata({b"edn": json.dumps({**meta, "video": str(video)}).encode()}),
                   store / "manifest.parquet")
    shutil.copy(d / "silent.mp4", video)  # another file at the same path
    out = tmp_path / "out.mp4"
    with caplog.at_level("WARNING"):
        main(["--pose", str(d / "pose.parquet"), "--generator", str(gen), "--source-manifest",
              str(store / "manifest.parquet"), "--out", str(out), "--side-by-side", str(tmp_path / "sbs.mp4"),
              "--stills", str(tmp_path / "stills"), "--frames-csv", str(tmp_path / "frames.csv"), "--threads", "1"])
    assert stream_facts(out)["audio"] == []
    assert "src.mp4 has changed since decode_frames" in caplog.text and "no audio" in caplog.text


def test_no_audio_when_the_source_has_none_and_no_face_model(models, source, tmp_path):
    gen, _ = models
    d, n = source
    info = transfer(d / "pose.parquet", gen, tmp_path / "out.mp4", tmp_path / "sbs.mp4", tmp_path / "stills",
                    tmp_path / "frames.csv", face_path=None, source_frames=None, audio_video=str(d / "silent.mp4"),
                    progress=False)
    assert info == {"frames": n, "fps": 10.0, "width": GEN, "height": GEN, "held": 0, "audio": False, "face": False}
    assert not probe(tmp_path / "out.mp4").has_audio
    assert stream_facts(tmp_path / "sbs.mp4")["width"] == 2 * GEN  # label | result without source frames


def decoded(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_transfer_writes_the_frames_of_the_plain_loop(models, source, tmp_path):
    """Threads and the device pipeline change no pixel: the stills (PNG, every frame here) and
    the video are those of rendering, generating and refining one frame after another."""
    from steps.prepare.faceboxes import face_boxes
    from steps.render.inference import apply_face, generate_sequence, label_renderer, load_face, load_generator

    gen, face = models
    d, n = source
    transfer(d / "pose.parquet", gen, tmp_path / "out.mp4", tmp_path / "sbs.mp4", tmp_path / "stills",
             tmp_path / "frames.csv", face_path=face, source_frames=d / "frames/frames.mjpeg", n_stills=n, progress=False)
    pose, held, _ = hold_missing(read_pose(d / "pose.parquet"))
    g, meta = load_generator(gen)
    face_g, fmeta = load_face(face)
    b = fmeta["boxes"]
    boxes = face_boxes(pose, GEN, GEN, fmeta["size"], b["smooth_window"], b["min_confidence"]).boxes
    render = label_renderer(meta)
    labels = [render(pose, i) for i in range(n)]
    plain = list(generate_sequence(g, labels))
    ref = [apply_face(face_g, f, lab, box) for f, lab, box in zip(plain, labels, boxes)]
    assert any(not np.array_equal(a, b) for a, b in zip(ref, plain))  # the face GAN is in the comparison
    src = open_frames(d / "frames")[:]
    for i in range(n):
        still = cv2.cvtColor(cv2.imread(str(tmp_path / f"stills/still_{i:05d}.png")), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(still, side_by_side(src[i], labels[i], ref[i], bool(held[i])))
    write_video(tmp_path / "ref.mp4", ref, 10)
    for a, b in zip(decoded(tmp_path / "out.mp4"), decoded(tmp_path / "ref.mp4"), strict=True):
        np.testing.assert_array_equal(a, b)  # x264 is deterministic: the same frames, the same video


def fail_in_renderer(monkeypatch, threads: list):
    import steps.render.inference

    real = steps.render.inference.label_renderer

    def renderer(*a, **k):
        render = real(*a, **k)

        def failing(pose, i):
            threads.append(threading.current_thread())
            if i == 5:
                raise RuntimeError("boom")
            return render(pose, i)
        return failing
    monkeypatch.setattr(steps.render.inference, "label_renderer", renderer)


def fail_at_call_5(monkeypatch, threads: list, module, name):
    real = getattr(module, name)

    def failing(*a, **k):
        threads.append(threading.current_thread())
        if len(threads) == 5:
            raise RuntimeError("boom")
        return real(*a, **k)
    monkeypatch.setattr(module, name, failing)


def fail_in_face(monkeypatch, threads):
    import steps.render.inference

    fail_at_call_5(monkeypatch, threads, steps.render.inference, "refine_face")


def fail_in_side_by_side(monkeypatch, threads):
    import steps.render.transfer

    fail_at_call_5(monkeypatch, threads, steps.render.transfer, "side_by_side")


@pytest.mark.parametrize("fault, in_main_thread", [(fail_in_renderer, False), (fail_in_face, True),
                                                   (fail_in_side_by_side, False)],
                         ids=["renderer thread", "face GAN", "side-by-side thread"])
def test_a_failure_mid_video_leaves_no_video(models, source, tmp_path, monkeypatch, fault, in_main_thread):
    gen, face = models
    d, _ = source
    threads: list = []
    fault(monkeypatch, threads)
    with pytest.raises(RuntimeError, match="boom"):
        transfer(d / "pose.parquet", gen, tmp_path / "out.mp4", tmp_path / "sbs.mp4", tmp_path / "stills",
                 tmp_path / "frames.csv", face_path=face, source_frames=d / "frames/frames.mjpeg", progress=False)
    assert (threads[-1] is threading.main_thread()) == in_main_thread
    assert not [p.name for p in tmp_path.iterdir() if p.suffix == ".mp4"]
    assert not (tmp_path / "frames.csv").exists()
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("ordered_map", "encode"))]
