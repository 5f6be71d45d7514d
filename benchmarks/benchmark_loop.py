"""Loop candidates: recall and precision on the synthetic revisit sequence, and the retrieval cost.

    python benchmarks/benchmark_loop.py [--frames 120] [--every 2] [--keypoints 1024] [--sizes 100 1000 10000]
        [--threads 1]

1. Recall. The synthetic 'revisit' sequence (demo/synthetic.py: a camera circling over a textured plane,
   back over its start) at 640x480; every --every-th frame is a keyframe, its SuperPoint features
   extracted with confident random weights (random_weights.py; trained weights will differ). Two global
   descriptors made of the keyframes' own descriptors are compared on the same keyframes:
     VLAD    keyframes.KeyframeStore (the node's): VLAD, centroids learned online from the store;
     BoW     an incremental vocabulary as rtabmap builds one (a descriptor farther than --word-radius
             from every word becomes a new word), tf-idf weights, cosine scores (inverted index).
   Ground truth: a candidate is correct when it sees >= summary.LOOP_OVERLAP of the keyframe's image
   (exact homographies). Printed: recall@1 / @5 over the keyframes that have a true loop, and the
   precision of the published candidates at several loop_min_score thresholds.
2. Cost. KeyframeStore.add (describe the new keyframe and query the store) for a 1024-keypoint keyframe
   once the store holds 100, 1,000 and 10,000 keyframes (filled with small random keyframes: the query
   cost depends on the number of keyframes, not on their keypoints), and the memory of the descriptors.
"""
import argparse
import platform
import tempfile
import time
from datetime import datetime, timezone

import numpy as np
import torch

from superglue_ros.demo.summary import LOOP_OVERLAP, loop_figures
from superglue_ros.demo.synthetic import generate_sequence
from superglue_ros.keyframes import KeyframeStore, LoopPolicy
from superglue_ros.matcher import Features, Matcher
from superglue_ros.random_weights import random_superglue, random_superpoint
from superglue_ros.tracking import Keyframe


def cpu_name() -> str:
    try:
        return next(line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or 'unknown CPU'


def keyframe_of(keyframe_id: int, features: Features) -> Keyframe:
    keypoints = features.keypoints_original()
    return Keyframe(keyframe_id, float(keyframe_id), features, keypoints, np.arange(len(keypoints), dtype=np.uint64))


class IncrementalBoW:
    """rtabmap-style incremental vocabulary: words are descriptors; one that is farther than `radius`
    (Euclidean, unit descriptors) from every word becomes a word; tf-idf, cosine similarity."""

    def __init__(self, radius: float):
        self.max_dot = 1 - radius ** 2 / 2   # |a - b|^2 = 2 - 2 a.b for unit vectors
        self.words = torch.zeros(0, 256)
        self.documents = []                  # per keyframe: {word: count}

    def add(self, descriptors: torch.Tensor) -> np.ndarray:
        """Quantise [N, D] descriptors (new words as needed), return the scores against earlier keyframes."""
        new = torch.ones(len(descriptors), dtype=torch.bool)
        words = torch.zeros(len(descriptors), dtype=torch.long)
        if len(self.words):
            best, words = (descriptors @ self.words.T).max(1)
            new = best < self.max_dot
        words[new] = len(self.words) + torch.arange(int(new.sum()))
        self.words = torch.cat([self.words, descriptors[new]])
        self.documents.append(dict(zip(*np.unique(words.numpy(), return_counts=True))))
        return self._scores()

    def _scores(self) -> np.ndarray:
        documents = len(self.documents)
        frequency = {}
        for document in self.documents:
            for word in document:
                frequency[word] = frequency.get(word, 0) + 1

        def vector(document):
            total = sum(document.values())
            v = {w: c / total * np.log(documents / frequency[w]) for w, c in document.items()}
            norm = np.sqrt(sum(x * x for x in v.values())) or 1.0
            return {w: x / norm for w, x in v.items()}
        query = vector(self.documents[-1])
        return np.array([sum(x * query.get(w, 0.0) for w, x in vector(d).items()) for d in self.documents[:-1]])


def recall(args):
    with tempfile.TemporaryDirectory() as directory:
        print(f'generating the revisit sequence: {args.frames} frames 640x480 ...', flush=True)
        sequence = generate_sequence(directory, num_frames=args.frames, path='revisit')
        frames = list(range(0, len(sequence), args.every))
        matcher = Matcher(random_superpoint(), random_superglue(), device='cpu')
        matcher.configure(max_keypoints=args.keypoints)
        features = [matcher.extract(sequence.image(i)) for i in frames]
    exclude = args.exclude_recent
    positives = {k: {j for j in range(k - exclude) if sequence.overlap(frames[k], frames[j]) >= LOOP_OVERLAP}
                 for k in range(len(frames))}
    print(f'{len(frames)} keyframes (every {args.every} frames), {sum(bool(p) for p in positives.values())} with a '
          f'true loop (overlap >= {LOOP_OVERLAP}, not among the {exclude} before it); '
          f'{np.mean([len(f.scores) for f in features]):.0f} keypoints per keyframe')

    store = KeyframeStore(len(frames) + 1, LoopPolicy(candidates_k=len(frames), exclude_recent=exclude, min_score=-1))
    vlad, vlad_ms = {}, []
    for k, f in enumerate(features):
        start = time.perf_counter()
        found = store.add(keyframe_of(k, f))
        vlad_ms.append((time.perf_counter() - start) * 1e3)
        vlad[k] = list(zip(found.ids.tolist(), found.scores.tolist()))

    bow, bow_model, bow_ms = {}, IncrementalBoW(args.word_radius), []
    for k, f in enumerate(features):
        start = time.perf_counter()
        scores = bow_model.add(f.descriptors.T.float())
        bow_ms.append((time.perf_counter() - start) * 1e3)
        eligible = np.arange(max(k - exclude, 0))
        order = eligible[np.argsort(-scores[eligible], kind='stable')]
        bow[k] = [(int(j), float(scores[j])) for j in order]

    for name, candidates, ms in (('VLAD (KeyframeStore)', vlad, vlad_ms), ('BoW incremental, tf-idf', bow, bow_ms)):
        print(f'\n{name}: per keyframe median {np.median(ms):.1f} ms, max {np.max(ms):.1f} ms (keyframe '
              f'{int(np.argmax(ms))}) over {len(ms)}'
              + (f', {len(bow_model.words)} words' if candidates is bow else ''))
        print('| loop_min_score | recall@1 | recall@5 | candidates published (top 5) | precision |')
        print('|---|---|---|---|---|')
        for threshold in args.thresholds:
            kept = {k: [(c, s) for c, s in cs if s >= threshold][:5] for k, cs in candidates.items()}
            f = loop_figures(kept, positives)
            print(f"| {threshold:g} | {f['recall_at_1']:.3f} | {f['recall_at_5']:.3f} | {f['candidates_published']} | "
                  + (f"{f['precision']:.3f} |" if f['precision'] is not None else 'n/a |'))


def cost(args):
    print(f'\nretrieval cost: KeyframeStore.add of a {args.keypoints}-keypoint keyframe (describe + query), '
          f'median of {args.repeats}')
    print('| keyframes stored | add (ms) | global descriptors (MiB) | stored keyframes (MiB) |')
    print('|---|---|---|---|')
    generator = torch.Generator().manual_seed(0)

    def random_features(n):
        descriptors = torch.nn.functional.normalize(torch.randn(256, n, generator=generator), dim=0)
        keypoints = torch.rand(n, 2, generator=generator) * torch.tensor([639.0, 479.0])
        return Features(keypoints, torch.rand(n, generator=generator), descriptors, (640, 480), (1.0, 1.0))
    for size in args.sizes:
        store = KeyframeStore(size + args.repeats, LoopPolicy())
        for k in range(size):  # small keyframes: the query cost depends on their number only
            store.add(keyframe_of(k, random_features(args.keypoints if k < 64 else 16)))
        times = []
        for r in range(args.repeats):
            keyframe = keyframe_of(size + r, random_features(args.keypoints))
            start = time.perf_counter()
            store.add(keyframe)
            times.append((time.perf_counter() - start) * 1e3)
        vectors = store._vectors.nbytes / 2 ** 20
        print(f'| {size:,} | {np.median(times):.1f} | {vectors:.0f} | {store.memory_bytes() / 2 ** 20 - vectors:.0f} |',
              flush=True)
        del store


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=120)
    parser.add_argument('--every', type=int, default=2, help='every N-th frame is a keyframe')
    parser.add_argument('--keypoints', type=int, default=1024)
    parser.add_argument('--exclude-recent', type=int, default=10)
    parser.add_argument('--word-radius', type=float, default=0.7, help='BoW: new word beyond this distance')
    parser.add_argument('--thresholds', type=float, nargs='+', default=[-1.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    parser.add_argument('--sizes', type=int, nargs='+', default=[100, 1000, 10000])
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--threads', type=int, default=1, help='torch threads (default 1: the machine is shared)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f'# benchmark_loop, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_name()}, '
          f'{torch.get_num_threads()} torch threads, torch {torch.__version__}')
    print('random weights (confident, seeded): trained weights will give other figures')
    recall(args)
    cost(args)


if __name__ == '__main__':
    main()
