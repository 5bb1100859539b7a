"""The training pairs of a generator: frame t and t+1 of one subject with their label maps.

FrameData reads one subject's frames store and renders its label maps; Subjects joins several
(the base) so that a pair never spans two; StepSampler draws a step's pairs as a pure function
of the step (exact resume); DeviceData keeps one subject's training frames on the GPU.
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from steps.prepare.framestore import open_frames
from steps.gan.loop import Stop
from steps.gan.models import IMG_CH
from steps.render.inference import resize_frame, to_tensor

if TYPE_CHECKING:
    from steps.gan.train import Phase, TrainConfig

log = logging.getLogger("train")
PAPER_MINUTES = "the paper trained on 8 to 17 minutes of video of each target"


class TooLittleVideo(ValueError):
    """A subject with too few usable frames to train on (a base skips it; a target stops)."""


def temporal_pairs(frames, n: int) -> np.ndarray:
    """(P, 2) frame indices (t, t') of the temporal pairs among frames [0, n): t' is the next frame
    that differs from t. A video filmed below frames.fps decodes into repeated frames, and a pair
    of two copies teaches the two-frame generator and discriminator nothing; a copy is also not
    the start of a pair of its own. Without repeats: (i, i + 1) for every i."""
    if n < 2:
        return np.zeros((0, 2), np.int64)
    new, prev = np.ones(n, bool), None
    for i in range(n):  # a repeat is an exact copy; one frame held at a time, whatever the length
        small = np.asarray(frames[i][::8, ::8])
        new[i] = prev is None or not np.array_equal(small, prev)
        prev = small
    starts = np.flatnonzero(new)
    return np.stack([starts[:-1], starts[1:]], 1).astype(np.int64)


class FrameData(Dataset):
    """Frame i of the target at (height, width) as uint8 (`label`, `frame`) or as tensors in
    [-1, 1] (`sample`). Item k is the temporal pair `pairs[k]` = (t, t'): (y_t, y_t', x_t, x_t');
    by default (i, i + 1)."""

    def __init__(self, frames_path, pose, height: int, width: int, render: Callable, pairs: np.ndarray | None = None):
        self.frames_path, self.pose, self.height, self.width, self.render = str(frames_path), pose, height, width, render
        self.pairs = pairs
        self._frames = None

    @property
    def frames(self):
        if self._frames is None:  # opened lazily, so each DataLoader worker maps it itself
            self._frames = open_frames(self.frames_path)
        return self._frames

    def __getstate__(self):
        return {**self.__dict__, "_frames": None}

    def __len__(self):
        return len(self.frames) - 1 if self.pairs is None else len(self.pairs)

    def pair(self, k: int) -> tuple[int, int]:
        return (k, k + 1) if self.pairs is None else (int(self.pairs[k, 0]), int(self.pairs[k, 1]))

    def label(self, i: int) -> np.ndarray:
        return self.render(self.pose, i, self.height, self.width)

    def frame(self, i: int) -> np.ndarray:
        return resize_frame(self.frames[i], self.height, self.width)

    def sample(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_tensor(self.label(i)), to_tensor(self.frame(i))

    def __getitem__(self, k: int):
        t, t1 = self.pair(k)
        y_t, x_t = self.sample(t)
        y_t1, x_t1 = self.sample(t1)
        return y_t, y_t1, x_t, x_t1


def split_frames(n: int, cfg: TrainConfig, frames_path="the frames store") -> tuple[int, int]:
    """(n_train, n_val): the held-out tail is the last ceil(n * val_fraction) frames. Fewer than
    train.min_train_frames / min_val_frames is an error, fewer than twice as many a warning."""
    n_val = math.ceil(n * cfg.val_fraction)
    n_train = n - n_val
    counts = (f"{frames_path} has {n} frames: {n_train} to train on and {n_val} held out "
              f"(train.val_fraction {cfg.val_fraction:g})")
    if n_train < max(2, cfg.min_train_frames) or n_val < cfg.min_val_frames:
        raise TooLittleVideo(f"{counts}; at least train.min_train_frames = {cfg.min_train_frames} and "
                         f"train.min_val_frames = {cfg.min_val_frames} are needed. Film the target for longer "
                         f"({PAPER_MINUTES}), or lower those keys knowingly")
    if n_train < 2 * cfg.min_train_frames or n_val < 2 * cfg.min_val_frames:
        log.warning("%s: little data, the model will see few poses and the held-out scores rest on few frames "
                    "(%s)", counts, PAPER_MINUTES)
    return n_train, n_val


class StepSampler(Sampler):
    """Indices of training pairs for steps [start, stop): batch*world draws per step from an RNG
    seeded by (seed, step); this rank takes its slice. Pure function of the step: resumable.
    n_pairs: one subject's count, or each subject's (the base): then every draw picks a subject
    first, evenly, so a long clip does not drown the short ones."""

    def __init__(self, n_pairs: int | list[int], batch, seed, start, stop, rank=0, world=1):
        self.sizes = np.atleast_1d(np.asarray(n_pairs, np.int64))
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.batch, self.seed, self.start, self.stop, self.rank, self.world = batch, seed, start, stop, rank, world

    def __len__(self):
        return (self.stop - self.start) * self.batch

    def indices(self, step: int) -> list[int]:
        rng, n = np.random.default_rng([self.seed, step]), self.batch * self.world
        if len(self.sizes) == 1:
            idx = rng.integers(0, self.sizes[0], n)
        else:
            s = rng.integers(0, len(self.sizes), n)
            idx = self.offsets[s] + (rng.random(n) * self.sizes[s]).astype(np.int64)
        return idx[self.rank * self.batch:(self.rank + 1) * self.batch].tolist()

    def __iter__(self):
        for s in range(self.start, self.stop):
            yield from self.indices(s)


class DeviceData:
    """The training frames and their label maps as uint8 tensors on the device (train.data_on_device):
    a step's batch is an index and a conversion there, with no loader and no host copy. The same
    values as FrameData's."""

    def __init__(self, data: FrameData, n_frames: int, device, memory_format):
        from concurrent.futures import ThreadPoolExecutor

        self.pairs = torch.tensor([data.pair(k) for k in range(len(data))], dtype=torch.int64, device=device)
        with ThreadPoolExecutor(4) as pool:  # cv2's drawing and resizing release the GIL
            labels = np.stack(list(pool.map(data.label, range(n_frames))))
            frames = np.stack(list(pool.map(data.frame, range(n_frames))))
        self.labels, self.frames = (torch.from_numpy(a).to(device) for a in (labels, frames))
        self.mem = memory_format

    @property
    def nbytes(self) -> int:
        return self.labels.nbytes + self.frames.nbytes

    def _floats(self, store: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        # as generator.to_tensor: uint8 -> [-1, 1]
        return store[idx].permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous(memory_format=self.mem)

    def batch(self, indices: list[int]) -> list[torch.Tensor]:
        """(y_t, y_t1, x_t, x_t1) of the pairs `indices`."""
        p = self.pairs[torch.tensor(indices, device=self.labels.device)]
        i, j = p[:, 0], p[:, 1]
        return [self._floats(self.labels, i), self._floats(self.labels, j),
                self._floats(self.frames, i), self._floats(self.frames, j)]


def data_fits_device(n_frames: int, height: int, width: int, channels: int, device, setting) -> bool:
    """train.data_on_device: true, false, or auto (CUDA, and under a quarter of the free memory)."""
    if setting != "auto":
        return bool(setting)
    if device.type != "cuda":
        return False
    return n_frames * height * width * channels < torch.cuda.mem_get_info(device)[0] / 4


class Subjects(Dataset):
    """The training pairs of one subject, or of several (the base), as one dataset: pair j is
    pair j - offset of the subject whose range holds j, so a pair never spans two subjects and
    one subject's pairs are FrameData's own."""

    def __init__(self, datas: list[FrameData], n_pairs: list[int]):
        self.datas, self.sizes, self.offsets = datas, list(n_pairs), np.cumsum([0] + list(n_pairs))

    def __len__(self):
        return int(self.offsets[-1])

    def locate(self, j: int) -> tuple[int, int]:
        """(subject, pair) of pair j."""
        s = int(np.searchsorted(self.offsets, j, side="right")) - 1
        return s, int(j - self.offsets[s])

    def __getitem__(self, j: int):
        s, i = self.locate(j)
        return self.datas[s][i]


def phase_data(cfg: TrainConfig, subjects: list, ph: Phase, device, mem):
    """(each subject's FrameData at the phase's size, their training pairs as one dataset, the
    training frames on the device or None: one subject's, when they fit)."""
    datas = [FrameData(s.frames_path, s.pose, ph.height, ph.width, s.render, s.pairs) for s in subjects]
    pairs, n_train = Subjects(datas, [len(s.pairs) for s in subjects]), subjects[0].n_train
    if len(subjects) > 1 or not data_fits_device(n_train, ph.height, ph.width, datas[0].label(0).shape[-1] + IMG_CH,
                                                 device, cfg.data_on_device):
        log.info("data: rendered by %d loader workers", cfg.workers)
        return datas, pairs, None
    device_data = DeviceData(datas[0], n_train, device, mem)
    log.info("data: %d frames and label maps on %s as uint8 (%.2f GiB)", n_train, device, device_data.nbytes / 2**30)
    return datas, pairs, device_data


def batches(data: Dataset, device_data: DeviceData | None, sampler: StepSampler, cfg: TrainConfig, device, mem):
    """The batches of sampler's steps, on the device."""
    if device_data is not None:
        for s in range(sampler.start, sampler.stop):
            yield device_data.batch(sampler.indices(s))
        return
    loader = DataLoader(data, batch_size=cfg.batch_size, num_workers=cfg.workers, pin_memory=device.type == "cuda",
                        sampler=sampler, worker_init_fn=_worker_init if cfg.workers else None,
                        prefetch_factor=4 if cfg.workers else None)
    for batch in loader:
        yield [t.to(device, non_blocking=True).contiguous(memory_format=mem) for t in batch]


def _worker_init(_):
    Stop.ignore_in_worker()
    torch.set_num_threads(1)
