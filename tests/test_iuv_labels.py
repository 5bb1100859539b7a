"""labels.iuv concat: DensePose's I, U, V as three more label-map channels for the generator
(as NVIDIA's vid2vid pose model), through training, the face GAN's crops, evaluation and
transfer (where the source's IUV follows its normalized poses). The IUV stores here are
constructed arrays: detectron2 is not installed on the development machine."""

import av
import numpy as np
import pytest

from conftest import snakemake, write_config
from steps.prepare.framestore import open_frames
from steps.prepare.backends.convert import IUVOnPoses, warp_iuv
from steps.render.inference import generate_sequence, label_renderer, load_generator
from steps.prepare.labels import open_iuv
from steps.prepare.posetable import write_pose
from steps.gan.pairs import FrameData
from steps.gan.target import default_renderer
from steps.gan.train import train
from test_train import H, W, LABELS, cfg, make_pose, write_data

CONCAT = {**LABELS, "iuv": "concat", "background": False}  # the IUV channels alone (background: test_background.py)


def iuv_of(frames: np.ndarray) -> np.ndarray:
    """An IUV store for the test dancer: the person's pixels (not the background gradient) get a
    part index from their column and U, V from their position."""
    person = frames[..., 2] != 120                       # the background's blue channel is 120
    yy, xx = np.mgrid[0:H, 0:W]
    part = (1 + (xx // 6) % 24).astype(np.uint8)
    iuv = np.zeros(frames.shape, np.uint8)
    iuv[..., 0] = np.where(person, part, 0)
    iuv[..., 1] = np.where(person, xx * 4, 0)
    iuv[..., 2] = np.where(person, yy * 4, 0)
    return iuv


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("iuv")
    frames_path, pose_path, pose = write_data(d)
    frames = open_frames(frames_path)[:]
    np.save(d / "iuv.npy", iuv_of(frames))
    c = cfg(global_steps=4)
    r = train(c, frames_path, pose, d / "out", d / "ckpt", CONCAT, progress=False, iuv_path=d / "iuv.npy")
    return d, frames_path, pose_path, pose, r


def test_the_generator_is_trained_on_six_label_channels(trained):
    d, frames_path, _, pose, r = trained
    assert r["done"]
    g, gcfg = load_generator(d / "out" / "generator.pt")
    assert gcfg["labels"]["iuv"] == "concat" and gcfg["model"]["label_ch"] == 6
    assert g.body[1].weight.shape[1] == 6 + 3          # label map + IUV + the previous frame
    # what train()'s data loader gives the generator: the skeleton, then I x 10, U, V of that frame
    iuv = np.load(d / "iuv.npy")
    data = FrameData(frames_path, pose, H, W, default_renderer(CONCAT, open_iuv(d / "iuv.npy", len(iuv), "test")))
    y, _ = data.sample(7)
    assert y.shape == (6, H, W)
    got = ((y[3:] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, np.concatenate([iuv[7, ..., :1] * 10, iuv[7, ..., 1:]], -1))
    # and the generator reads them: other IUV images, another frame
    lab = label_renderer(gcfg, iuv)(pose, 7)   # what evaluation and transfer render
    np.testing.assert_array_equal(((y.permute(1, 2, 0).numpy() + 1) * 127.5).round(), lab)
    moved = lab.copy()
    moved[..., 3:] = np.roll(lab[..., 3:], 9, axis=1)
    a, b = (next(generate_sequence(g, [x])) for x in (lab, moved))
    assert np.abs(a.astype(int) - b).mean() > 0.5


def test_training_with_concat_needs_a_matching_iuv_store(trained, tmp_path):
    d, frames_path, _, pose, _ = trained
    with pytest.raises(ValueError, match="labels.iuv concat.*IUV store"):
        train(cfg(global_steps=1), frames_path, pose, tmp_path / "o", tmp_path / "c", CONCAT, progress=False)
    np.save(tmp_path / "short.npy", np.load(d / "iuv.npy")[:5])
    with pytest.raises(ValueError, match=r"short.npy: IUV store of shape \(5, 64, 64, 3\), expected \(24, H, W, 3\)"):
        train(cfg(global_steps=1), frames_path, pose, tmp_path / "o", tmp_path / "c", CONCAT,
              progress=False, iuv_path=tmp_path / "short.npy")
    assert not (tmp_path / "c").exists()            # refused before any checkpoint
    # a generator trained with IUV channels refuses to render label maps without them
    _, gcfg = load_generator(d / "out" / "generator.pt")
    with pytest.raises(ValueError, match="trained on label maps with DensePose IUV channels"):
        label_renderer(gcfg)


def test_iuv_follows_the_normalized_pose():
    """Frame i's IUV moved by the scale and shift that take the source's joints to the normalized
    ones; a held frame reuses the IUV of the frame whose pose it holds; no fit: all zero."""
    n = 3
    src = np.full((n, 25, 2), np.nan)
    src[:, :4] = [(10, 10), (30, 10), (10, 40), (30, 40)]
    dst = src * 0.5 + np.array([40.0, 20.0])
    dst[2] = np.nan                                      # a frame without a normalized pose
    iuv = np.zeros((n, 48, 48, 3), np.uint8)
    iuv[0, 10:20, 10:20] = (5, 100, 200)
    iuv[1, 30:40, 20:30] = (7, 50, 60)
    on = IUVOnPoses(iuv, src, dst, 64, 80, frame_of=[0, 1, 1])
    assert len(on) == 3 and on[0].shape == (64, 80, 3)
    np.testing.assert_array_equal(on[0], warp_iuv(iuv[0], 0.5, (40, 20), 64, 80))
    ys, xs = np.nonzero(on[0][..., 0] == 5)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (25, 29, 45, 49)   # 0.5 * (10..19) + shift
    np.testing.assert_array_equal(on[2], on[1])                             # held: frame 1's IUV
    assert not IUVOnPoses(iuv, src, dst, 64, 80)[2].any()
    with pytest.raises(ValueError, match="2 IUV images for 3 source poses"):
        IUVOnPoses(iuv[:2], src, dst, 64, 80)


def test_transfer_and_evaluation_feed_the_iuv_channels(trained, tmp_path):
    from steps.evaluate.reconstruction import evaluate
    from steps.render.transfer import transfer

    d, frames_path, pose_path, pose, _ = trained
    n = 12
    src_pose = make_pose(n)
    src_pose.meta.subject = "src"
    write_pose(src_pose, tmp_path / "src.parquet")
    norm = src_pose.copy()
    for arr in norm.parts.values():
        arr[..., :2] = arr[..., :2] * 0.8 + np.array([6.4, 11.2], np.float32)
    write_pose(norm, tmp_path / "norm.parquet")
    np.save(tmp_path / "src_iuv.npy", iuv_of(open_frames(frames_path)[:n]))
    outs = [tmp_path / p for p in ("t.mp4", "sbs.mp4", "stills", "t.csv")]
    with pytest.raises(ValueError, match="trained on label maps with DensePose IUV channels"):
        transfer(tmp_path / "norm.parquet", d / "out" / "generator.pt", *outs, progress=False)
    with pytest.raises(ValueError, match="--source-pose"):
        transfer(tmp_path / "norm.parquet", d / "out" / "generator.pt", *outs, progress=False,
                 source_iuv=tmp_path / "src_iuv.npy")
    assert not outs[0].exists()
    info = transfer(tmp_path / "norm.parquet", d / "out" / "generator.pt", *outs, progress=False,
                    source_iuv=tmp_path / "src_iuv.npy", source_pose=tmp_path / "src.parquet")
    assert info["frames"] == n
    with av.open(str(outs[0])) as c:
        video = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
    assert len(video) == n
    # the IUV reaches the generator: with all-zero source IUV images the video is another one
    np.save(tmp_path / "zero_iuv.npy", np.zeros((n, H, W, 3), np.uint8))
    outs0 = [tmp_path / p for p in ("z.mp4", "zsbs.mp4", "zstills", "z.csv")]
    transfer(tmp_path / "norm.parquet", d / "out" / "generator.pt", *outs0, progress=False,
             source_iuv=tmp_path / "zero_iuv.npy", source_pose=tmp_path / "src.parquet")
    with av.open(str(outs0[0])) as c:
        zero = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
    assert np.mean([np.abs(a - b).mean() for a, b in zip(video, zero)]) > 0.5
    with av.open(str(outs[1])) as c:                     # label panel: the skeleton's RGB
        assert next(c.decode(video=0)).width == 2 * W
    df, grid, facts = evaluate(frames_path, pose_path, d / "out" / "generator.pt", detect=False,
                               iuv_path=d / "iuv.npy", boxes={"size": 64})
    assert grid.shape[-1] == 3 and grid.shape[1] == 3 * W
    assert np.isfinite(df.loc[df.model.str.contains("temporal"), "ssim"]).all()


def test_the_workflow_passes_the_iuv_stores_to_every_generator_rule(tmp_path):
    for s in ("a", "b"):
        (tmp_path / f"{s}.mp4").write_bytes(b"x")
    (tmp_path / "dp.yaml").write_text("")
    (tmp_path / "dp.pkl").write_bytes(b"")
    write_config(tmp_path, {
        "subjects": {"a": {"video": str(tmp_path / "a.mp4")}, "b": {"video": str(tmp_path / "b.mp4")}},
        "transfers": [{"source": "a", "target": "b"}],
        "pose": {"backend": "densepose",
                 "densepose": {"config_file": str(tmp_path / "dp.yaml"), "weights": str(tmp_path / "dp.pkl")}},
        "labels": {"iuv": "concat"},
        "evaluate": {"ablation": True},
    })
    out = snakemake(tmp_path, "-n", "-p", "all").stdout
    for rule in ("train_generator", "train_generator_no_temporal", "train_face", "evaluate"):
        assert f"rule {rule}:" in out
    commands = [line for line in out.splitlines() if " -m steps." in line]
    generator_runs = [c for c in commands  # score_transfer reads the video, not a generator
                      if any(f"-m steps.{m} " in c for m in ("gan.train", "gan.face", "evaluate.reconstruction"))]
    assert len(generator_runs) == 4      # two generators, the face GAN, the evaluation (all of target b)
    assert all("--iuv results/densepose/b/iuv.npy" in c for c in generator_runs)
    (t,) = [c for c in commands if "-m steps.render.transfer " in c]
    assert "--source-iuv results/densepose/a/iuv.npy --source-pose results/pose_smooth/a.parquet" in t
    previews = [c for c in commands if "-m steps.prepare.labels " in c and "--iuv " in c]
    # the previews of both subjects draw the skeleton over their own IUV (steps.prepare.labels overlays it)
    assert sorted(c.split("--iuv ")[1].split()[0] for c in previews) == [f"results/densepose/{s}/iuv.npy" for s in "ab"]


def test_checkpoints_of_other_iuv_images_are_not_resumed(trained, tmp_path):
    d, frames_path, _, pose, _ = trained
    iuv = np.load(d / "iuv.npy")
    np.save(tmp_path / "iuv.npy", iuv)
    c = cfg(global_steps=4)
    train(c, frames_path, pose, tmp_path / "o", tmp_path / "c", CONCAT, progress=False, iuv_path=tmp_path / "iuv.npy",
          max_steps=1)
    np.save(tmp_path / "iuv.npy", np.roll(iuv, 5, axis=2))   # DensePose rerun: other IUV images
    with pytest.raises(ValueError, match="trained on other frames, poses or IUV images"):
        train(c, frames_path, pose, tmp_path / "o", tmp_path / "c", CONCAT, progress=False, iuv_path=tmp_path / "iuv.npy")
