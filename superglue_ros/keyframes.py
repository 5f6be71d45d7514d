"""Keyframe store of one camera and its loop candidates: pure Python + torch, no ROS.

    store = KeyframeStore(size=500)                   # one per camera; the tracker adds its keyframes
    candidates = store.add(keyframe)                  # LoopCandidates: earlier keyframes that look alike
    keyframe, features = store.for_matching(id, device)   # stored features, ready for Matcher.match

Store. Every keyframe a camera takes is kept under its id (tracking.Keyframe: keypoints, track ids,
calibration, stamp; the node adds the image's header: its exact stamp and frame_id), with a float16
host copy of its descriptors made when it is added. The newest entry is the tracker's current
keyframe itself, with its features on the matcher's device (the keyframe frames are matched
against). When a newer keyframe arrives, the older one's features move to the host: keypoints and
scores in float32, descriptors the float16 copy (half the bytes; a 1024-keypoint keyframe holds
about 0.55 MiB). At most `size` keyframes are kept; the oldest is evicted first (a loop closes onto a
place seen long ago, but a robot's memory is bounded: `memory_bytes()` is on /diagnostics).

Matching stored keyframes (pipeline.match_keyframes) uses Features rebuilt from the store on the
matcher's device, descriptors always as stored (float16 values in float32), so a keyframe gives
the same correspondences while it is the newest and after it moved to the host.

Loop candidates. Each new keyframe gets a global descriptor made of its own SuperPoint descriptors,
no other network: VLAD (Jegou et al., "Aggregating local descriptors into a compact image
representation", CVPR 2010) with intra-normalisation (Arandjelovic & Zisserman, "All about VLAD",
CVPR 2013) and signed square roots (Jegou et al., TPAMI 2012). Its CLUSTERS centroids are learned
online from the camera's own keyframes (k-means on descriptors sampled from the store, again at
the 1st, 2nd, 4th, ... TRAIN_UNTIL-th keyframe with keypoints, and at each one until there are enough
samples, every stored vector recomputed; fixed after), as no published SuperPoint vocabulary exists. A
keyframe without keypoints has no global descriptor: no candidates, and it is no one's candidate. The candidates of a keyframe are the loop_candidates_k
stored keyframes most similar to it (cosine of the descriptors, -1..1), leaving out the
loop_exclude_recent keyframes just before it and those below loop_min_score. The cost of one
query is one [size, CLUSTERS * D] matrix-vector product (benchmarks/benchmark_loop.py measures
it and the choice against an incremental vocabulary with tf-idf, docs/BENCHMARKS.md).

Threads: add() belongs to the camera's frame thread; for_matching(), get(), ids(), memory_bytes(),
set_header(), header() and the policy setter may be called from any thread (one lock, held only for
dictionary and array updates, never during SuperGlue).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .matcher import Features
from .settings import check, defaults

if TYPE_CHECKING:
    from .tracking import Keyframe

STORED_DESCRIPTORS = torch.float16  # host storage of older keyframes' descriptors
CLUSTERS = 16                       # VLAD centroids: a CLUSTERS * 256 = 4096-dimensional descriptor
TRAIN_UNTIL = 64                    # the centroids are relearned at keyframe 1, 2, 4, ..., TRAIN_UNTIL
TRAIN_SAMPLES = 256                 # descriptors sampled per stored keyframe to learn them
KMEANS_ITERATIONS = 20


@dataclass(frozen=True)
class LoopPolicy:
    """Which earlier keyframes are loop candidates (module doc). Defaults and accepted values:
    settings.py (loop_candidates_k, loop_exclude_recent, loop_min_score)."""
    candidates_k: int = defaults('loop')['loop_candidates_k']
    exclude_recent: int = defaults('loop')['loop_exclude_recent']
    min_score: float = defaults('loop')['loop_min_score']

    # field -> setting name
    SETTINGS = {'candidates_k': 'loop_candidates_k', 'exclude_recent': 'loop_exclude_recent',
                'min_score': 'loop_min_score'}

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, check(self.SETTINGS[f.name], getattr(self, f.name)))

    @classmethod
    def from_settings(cls, values: dict, current: 'LoopPolicy | None' = None) -> 'LoopPolicy':
        """`current` (default: the defaults) with the loop settings among `values` applied."""
        return replace(current or cls(), **{f: values[s] for f, s in cls.SETTINGS.items() if s in values})


@dataclass
class LoopCandidates:
    """The loop candidates of a new keyframe: earlier keyframes of the same camera, most similar first."""
    keyframe_id: int
    ids: np.ndarray       # [k] uint64 keyframe ids
    scores: np.ndarray    # [k] float32 similarity, cosine of the global descriptors (-1..1)


class VLAD:
    """VLAD global descriptor of one image's local descriptors, centroids learned with k-means (module doc)."""

    def __init__(self, clusters: int = CLUSTERS, seed: int = 0):
        self.clusters = clusters
        self.centroids: Tensor | None = None   # [K, D] float32, host
        self._seed = seed

    def train(self, samples: Tensor):
        """Learn the centroids from samples [S, D] (float32, host): Lloyd's k-means, the first centroids
        drawn from the samples with this object's seed (deterministic, no global random state).
        Fewer samples than clusters: nothing changes."""
        if len(samples) < self.clusters:
            return
        generator = torch.Generator().manual_seed(self._seed)
        centroids = samples[torch.randperm(len(samples), generator=generator)[:self.clusters]].clone()
        for _ in range(KMEANS_ITERATIONS):
            assignment = self._assign(samples, centroids)                                  # [S]
            sums = torch.zeros_like(centroids).index_add_(0, assignment, samples)          # [K, D]
            counts = torch.bincount(assignment, minlength=self.clusters)[:, None]          # [K, 1]
            centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)     # empty: kept
        self.centroids = centroids

    @staticmethod
    def _assign(descriptors: Tensor, centroids: Tensor) -> Tensor:
        """[S] index of the nearest centroid (Euclidean) of each descriptor [S, D]."""
        return (descriptors @ centroids.T - 0.5 * (centroids * centroids).sum(1)).argmax(1)

    @property
    def dim(self) -> int | None:
        return None if self.centroids is None else self.centroids.numel()

    def describe(self, descriptors: Tensor) -> np.ndarray:
        """[K * D] float32 unit vector of descriptors [N, D] (float32, host); zeros without keypoints."""
        centroids = self.centroids
        assignment = self._assign(descriptors, centroids)
        residuals = torch.zeros_like(centroids).index_add_(0, assignment, descriptors - centroids[assignment])
        residuals = residuals.sign() * residuals.abs().sqrt()                      # signed square root
        residuals = residuals / residuals.norm(dim=1, keepdim=True).clamp(min=1e-12)   # intra-normalisation
        vector = residuals.reshape(-1)
        return (vector / vector.norm().clamp(min=1e-12)).numpy()


@dataclass
class _Entry:
    keyframe: 'Keyframe'
    descriptors: Tensor      # [D, N] float16 host copy: the storage, and the VLAD input
    header: object = None    # what the node gives (set_header): its std_msgs/Header of the image


class KeyframeStore:
    """The keyframes of one camera, newest last, at most `size` (module doc). policy: LoopPolicy, live."""

    def __init__(self, size: int = defaults('keyframes')['keyframe_store_size'], policy: LoopPolicy | None = None):
        self.size = check('keyframe_store_size', size)
        self.policy = LoopPolicy() if policy is None else policy
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, _Entry] = OrderedDict()   # id -> entry, oldest first
        self._vlad = VLAD()
        # rows grow with the keyframes stored (doubling, at most `size`): a large keyframe_store_size costs
        # nothing until its keyframes exist (preallocated, 1,000,000 would be 16 GiB of global descriptors)
        self._vectors: np.ndarray | None = None      # [rows, K * D] float32 global descriptors, row = id % size
        self._row_ids = np.full(0, -1, np.int64)     # [rows] keyframe id of each row, -1: empty
        self._added = 0                              # keyframes added that have keypoints (the learning schedule)
        self.evicted = 0                             # keyframes evicted so far

    @property
    def policy(self) -> LoopPolicy:
        return self._policy

    @policy.setter
    def policy(self, policy: LoopPolicy):
        if not isinstance(policy, LoopPolicy):
            raise TypeError(f'policy must be a keyframes.LoopPolicy, got {type(policy).__name__}')
        self._policy = policy

    # -- the camera's frame thread ------------------------------------------------------------------

    @property
    def newest(self) -> 'Keyframe | None':
        """The tracker's current keyframe (features on the matcher's device), None before the first."""
        with self._lock:
            return next(reversed(self._entries.values())).keyframe if self._entries else None

    def add(self, keyframe: 'Keyframe') -> LoopCandidates:
        """Store `keyframe` as the newest entry (ids must increase); the previous newest moves to the
        host; the oldest beyond `size` is evicted. Returns its loop candidates among the keyframes
        stored before it."""
        with self._lock:
            if self._entries and keyframe.id <= next(reversed(self._entries)):
                raise ValueError(f'keyframe id {keyframe.id} added after {next(reversed(self._entries))}: '
                                 'ids must increase')
        descriptors = keyframe.features.descriptors.detach().to('cpu', STORED_DESCRIPTORS)  # [D, N]
        with self._lock:
            previous = next(reversed(self._entries.values())) if self._entries else None
            if previous is not None:
                previous.keyframe.features = _on_host(previous.keyframe.features, previous.descriptors)
            self._entries[keyframe.id] = _Entry(keyframe, descriptors)
            self._grow(keyframe.id % self.size + 1)
            while len(self._entries) > self.size:
                evicted, _ = self._entries.popitem(last=False)
                self._row_ids[evicted % self.size] = -1
                self.evicted += 1
            stored = list(self._entries.values())
        # keyframe 1, 2, 4, ... counting those with keypoints (a dark start or a lens cap gives keyframes without
        # any: they would use up the schedule and leave the centroids unlearned, loop candidates off for good)
        if descriptors.shape[1] > 0:
            self._added += 1
            if (self._added <= TRAIN_UNTIL and self._added & (self._added - 1) == 0) or self._vlad.centroids is None:
                self._learn(stored)
        # no keypoints, no description: such a keyframe (a black image) has no candidates and is none
        vector = (None if self._vlad.centroids is None or descriptors.shape[1] == 0
                  else self._vlad.describe(descriptors.T.float()))
        return self._candidates(keyframe.id, vector)

    def _learn(self, stored: list[_Entry]):
        """Learn the centroids again from the stored keyframes, and describe the earlier ones anew
        (only the camera's thread changes the entries: `stored` is current)."""
        self._vlad.train(_samples([entry.descriptors for entry in stored]))
        if self._vlad.centroids is None:
            return
        with self._lock:
            rows = len(self._row_ids)
        vectors, row_ids = np.zeros((rows, self._vlad.dim), np.float32), np.full(rows, -1, np.int64)
        for entry in stored[:-1]:
            if entry.descriptors.shape[1] == 0:
                continue
            row = entry.keyframe.id % self.size
            vectors[row], row_ids[row] = self._vlad.describe(entry.descriptors.T.float()), entry.keyframe.id
        with self._lock:
            self._vectors, self._row_ids = vectors, row_ids

    def _grow(self, rows: int):
        """At least `rows` rows (under the lock): doubled, at most `size`."""
        if rows <= len(self._row_ids):
            return
        capacity = min(self.size, max(rows, 2 * len(self._row_ids), 16))
        row_ids = np.full(capacity, -1, np.int64)
        row_ids[:len(self._row_ids)] = self._row_ids
        self._row_ids = row_ids
        if self._vectors is not None:
            vectors = np.zeros((capacity, self._vectors.shape[1]), np.float32)
            vectors[:len(self._vectors)] = self._vectors
            self._vectors = vectors

    def _candidates(self, keyframe_id: int, vector: np.ndarray | None) -> LoopCandidates:
        """The loop candidates of keyframe_id (module doc); its vector is stored as it is queried."""
        policy, row = self.policy, keyframe_id % self.size
        with self._lock:
            if vector is None or self._vectors is None:
                return LoopCandidates(keyframe_id, np.zeros(0, np.uint64), np.zeros(0, np.float32))
            self._vectors[row], self._row_ids[row] = vector, keyframe_id
            scores = (torch.from_numpy(self._vectors) @ torch.from_numpy(vector)).numpy()  # [size], torch's threads
            eligible = (self._row_ids >= 0) & (self._row_ids < keyframe_id - policy.exclude_recent)
            scores, ids = scores[eligible], self._row_ids[eligible]
        keep = scores >= policy.min_score
        scores, ids = scores[keep], ids[keep]
        best = np.argsort(-scores, kind='stable')[:policy.candidates_k]
        return LoopCandidates(keyframe_id, ids[best].astype(np.uint64), scores[best].astype(np.float32))

    # -- any thread -----------------------------------------------------------------------------------

    def get(self, keyframe_id: int) -> 'Keyframe':
        """The stored keyframe; KeyError saying whether it was evicted or never existed."""
        with self._lock:
            return self._entry(keyframe_id).keyframe

    def _entry(self, keyframe_id: int) -> _Entry:
        entry = self._entries.get(keyframe_id)
        if entry is not None:
            return entry
        if not self._entries:
            raise KeyError(f'keyframe {keyframe_id}: no keyframe stored yet')
        oldest, newest = next(iter(self._entries)), next(reversed(self._entries))
        why = ('evicted (the store keeps the newest keyframe_store_size)' if keyframe_id < oldest
               else 'not taken yet' if keyframe_id > newest else 'not stored')
        raise KeyError(f'keyframe {keyframe_id} is {why}; stored: {oldest}..{newest}')

    def for_matching(self, keyframe_id: int, device: torch.device) -> tuple['Keyframe', Features]:
        """The stored keyframe and new Features of it on `device` for Matcher.match: keypoints and scores
        float32, descriptors [D, N] the stored float16 values in float32 (module doc); their SuperGlue
        encoding is their own (never the tracker's cached one). KeyError as get()."""
        with self._lock:
            entry = self._entry(keyframe_id)
            keyframe, features = entry.keyframe, entry.keyframe.features
        return keyframe, Features(features.keypoints.to(device, torch.float32),
                                  features.scores.to(device, torch.float32),
                                  entry.descriptors.to(device, torch.float32), features.image_size, features.scale,
                                  keypoints_host=features.keypoints_host)

    def set_header(self, keyframe_id: int, header):
        """Record the header of the keyframe's image, opaque here (the node's std_msgs/Header: the exact
        stamp and the frame_id, which the pipeline does not know); ignored once evicted."""
        with self._lock:
            if keyframe_id in self._entries:
                self._entries[keyframe_id].header = header

    def header(self, keyframe_id: int):
        """The header recorded for the keyframe; None if none, or if it is not stored (any more)."""
        with self._lock:
            entry = self._entries.get(keyframe_id)
            return None if entry is None else entry.header

    def ids(self) -> list[int]:
        """Stored keyframe ids, oldest first."""
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def memory_bytes(self) -> int:
        """Bytes held: every stored keyframe's arrays (the newest's device features included, and its
        cached SuperGlue encoding, a rig's stereo depth) and the global descriptors."""
        with self._lock:
            entries = list(self._entries.values())
            total = 0 if self._vectors is None else self._vectors.nbytes + self._row_ids.nbytes
        for index, entry in enumerate(entries):
            keyframe, features = entry.keyframe, entry.keyframe.features
            tensors = [entry.descriptors, features.keypoints, features.scores]
            if index == len(entries) - 1:  # the newest: its device features too
                tensors += [features.descriptors] + ([features.encoded] if features.encoded is not None else [])
            total += sum(t.numel() * t.element_size() for t in tensors)
            total += keyframe.keypoints.nbytes + keyframe.track_ids.nbytes
            total += 0 if keyframe.depth is None else keyframe.depth.nbytes  # a rig's keyframes: stereo depth
            total += 0 if features.keypoints_host is None else features.keypoints_host.nbytes
        return total


def _on_host(features: Features, descriptors: Tensor) -> Features:
    """An older keyframe's features on the host (module doc): descriptors [D, N], the stored float16
    copy; no cached encoding."""
    return Features(features.keypoints.cpu(), features.scores.float().cpu(), descriptors, features.image_size,
                    features.scale, keypoints_host=features.keypoints_host)


def _samples(descriptors: list[Tensor]) -> Tensor:
    """[S, D] float32: up to TRAIN_SAMPLES descriptors of each keyframe (evenly spaced: SuperPoint lists
    keypoints by score, so all strengths are drawn), from at most TRAIN_UNTIL keyframes."""
    picked = []
    for d in descriptors[-TRAIN_UNTIL:]:  # [D, N]
        step = max(d.shape[1] // TRAIN_SAMPLES, 1)
        picked.append(d.T[::step][:TRAIN_SAMPLES].float())
    return torch.cat(picked) if picked else torch.zeros(0, 0)
