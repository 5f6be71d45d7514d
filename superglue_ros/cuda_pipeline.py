"""Camera pipelines on CUDA streams: a camera's uploads, SuperPoint and SuperGlue overlapped (issue 4).

    matcher = Matcher.from_weights('superpoint', 'indoor', max_keypoints=1024)  # weights shared by the cameras
    camera = CameraPipeline(matcher, KeyframePolicy())                          # one per camera (and thread)
    for result in camera.process_stream(frames):   # (image, stamp_s) in, FrameResult out, in order
        publish(result)
    # or frame by frame: camera.submit(image, stamp_s) ... result = camera.collect()

A CameraPipeline is a KeyframeFrontend (same keyframe policy, verification, request_new_keyframe,
configure, match_pair) whose frames run on three CUDA streams of its own:

  copy     the grey image (converted on the host, image.py) goes into a pinned host buffer and is
           copied to a device buffer, non_blocking; both buffers are reused (one pair per frame in flight)
  extract  SuperPoint, once the upload is done (event)
  match    SuperGlue against the keyframe, once the extraction is done (event), then the frame's
           keypoints, matches and scores copied into pinned host buffers, non_blocking

The host waits for the device only in collect(), for the event after those copies: where it needs
the results to publish. Nothing synchronises the whole device. The keyframe's features and cached
SuperGlue encoding stay on the device.

submit() enqueues a frame's upload and SuperPoint (it returns once SuperPoint's keypoint selection,
which needs the host, is done: the device may still run the rest); collect() returns the oldest
submitted frame's FrameResult. A frame's SuperGlue is enqueued as soon as its keyframe is known,
i.e. when the frames before it are collected; so with two frames in flight (depth 2, the default
on a GPU; process_stream), frame N+1's SuperPoint runs while frame N's SuperGlue does. The keyframe
decision is KeyframeFrontend.process itself, run in collect() on the features and match already
computed: the results are exactly the sequential KeyframeFrontend's. Live settings (configure)
apply to frames submitted after the change.

Several cameras: one CameraPipeline per camera on one shared Matcher (one copy of the weights),
each driven by its own thread; their streams run concurrently. submit / collect / process /
process_stream of one camera belong to one thread; request_new_keyframe, policy, verification and
configure may be called from any (as for KeyframeFrontend).

On the CPU the same object runs the same schedule without streams or events (enqueued work is done
at once), so the CPU tests exercise the scheduling code.
"""
import math
import time
from collections import deque
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch
from torch import Tensor

from .frontend import FrameResult, KeyframeFrontend, KeyframePolicy
from .geometry import Verification
from .image import prepare_image
from .matcher import Features, Matcher, MatchResult


class _Mark:
    """A point in a stream's work: a CUDA event on a GPU; on the CPU, where enqueued work is already
    done, the host clock."""

    def __init__(self, cuda: bool):
        self.event = torch.cuda.Event(enable_timing=True) if cuda else None
        self.time_s = 0.0

    def record(self, stream):
        if self.event is None:
            self.time_s = time.perf_counter()
        else:
            self.event.record(stream)

    def block(self, stream):
        """Work enqueued on `stream` after this call starts once this mark is reached."""
        if self.event is not None:
            stream.wait_event(self.event)

    def synchronize(self):
        """The host waits until this mark is reached (at once for a mark never recorded)."""
        if self.event is not None:
            self.event.synchronize()

    def ms_since(self, start: '_Mark') -> float:
        """Milliseconds from `start` to this mark; both reached."""
        if self.event is None:
            return (self.time_s - start.time_s) * 1e3
        return start.event.elapsed_time(self.event)


class _UploadSlot:
    """The upload buffers of one frame in flight, reused every `depth` frames: the grey image
    [1, 1, H, W] float32 in pinned host memory and on the device (on the CPU, one buffer), and the
    marks of that frame's upload and extraction."""

    def __init__(self, device: torch.device, streams: tuple):
        self.device, self.streams = device, streams  # the streams that use the device buffer
        self.cuda = device.type == 'cuda'
        self.host = self.image = None
        self.upload_start, self.uploaded, self.extract_start, self.extracted = (_Mark(self.cuda) for _ in range(4))

    def buffers(self, shape: tuple) -> tuple[Tensor, Tensor]:
        """(host, device) buffers of this shape; new ones only when the image size changes."""
        if self.host is None or tuple(self.host.shape) != shape:
            # the old buffers' last frame is collected: its upload and SuperPoint are finished
            self.host = torch.empty(shape, dtype=torch.float32, pin_memory=self.cuda)
            self.image = torch.empty(shape, dtype=torch.float32, device=self.device) if self.cuda else self.host
            if self.cuda:  # freed with work still queued (pipeline dropped mid-stream): not reused before it ends
                for stream in self.streams:
                    self.image.record_stream(stream)
        return self.host, self.image


class _Download:
    """Pinned host buffers the match stream copies one frame's results into (one frame's matching is
    in flight at a time), and the marks of that frame's matching and download."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == 'cuda'
        self.capacity = 0
        self.keypoints = self.matches = self.scores = None
        self.match_start, self.matched, self.downloaded = (_Mark(self.cuda) for _ in range(3))

    def reserve(self, size: int):
        """Room for `size` keypoints; grows by powers of two (the previous results are collected)."""
        if size > self.capacity:
            self.capacity = 1 << max(size - 1, 255).bit_length()
            self.keypoints = torch.empty((self.capacity, 2), dtype=torch.float32, pin_memory=self.cuda)
            self.matches = torch.empty(self.capacity, dtype=torch.int64, pin_memory=self.cuda)
            self.scores = torch.empty(self.capacity, dtype=torch.float32, pin_memory=self.cuda)


@dataclass
class StreamFeatures(Features):
    """Features extracted on a camera's stream. Their keypoints come to the host with the frame's
    match results (non_blocking), so keypoints_original() needs no device copy."""
    host_keypoints: np.ndarray | None = None  # [N, 2] float32 processed-image pixels, once collected

    def keypoints_original(self) -> np.ndarray:
        if self.host_keypoints is None:
            return super().keypoints_original()
        return self.host_keypoints * np.asarray(self.scale, np.float32)


@dataclass
class _Frame:
    """A submitted frame until it is collected."""
    image: np.ndarray
    stamp_s: float
    color_order: str
    slot: _UploadSlot
    features: StreamFeatures
    submitted_s: float                      # time.perf_counter() at submit
    preprocess_ms: float
    matched: bool = False                   # its SuperGlue and downloads are enqueued
    keyframe: StreamFeatures | None = None  # what it is matched against; None: it becomes the keyframe directly


class _PrefetchingMatcher(Matcher):
    """A camera's view of the shared Matcher (same models, device, resize, precision, settings). While
    KeyframeFrontend.process runs on a collected frame, extract() and match() of that frame return
    what the streams computed; anything else (match_pair) takes the plain Matcher path."""

    def __init__(self, matcher: Matcher):
        vars(self).update(vars(matcher))  # shares the models: no copy of the weights
        self.expected = None  # (image, features, keyframe features, MatchResult | None) of the collected frame

    def extract(self, image: np.ndarray, color_order: str = 'bgr') -> Features:
        if self.expected is not None and image is self.expected[0]:
            return self.expected[1]
        return super().extract(image, color_order)

    def match(self, features0: Features, features1: Features) -> MatchResult:
        expected = self.expected
        if expected is not None and expected[3] is not None and features0 is expected[2] and features1 is expected[1]:
            return expected[3]
        return super().match(features0, features1)


class CameraPipeline(KeyframeFrontend):
    """KeyframeFrontend of one camera on its own CUDA streams (module doc).

    matcher: the Matcher shared by the cameras; depth: frames in flight at most. 2: frame N+1's
    SuperPoint overlaps frame N's SuperGlue; 1: no overlap. Default: 2 on a GPU, 1 on the CPU, where
    nothing runs concurrently and a second frame in flight only delays the first one's result.
    """

    def __init__(self, matcher: Matcher, policy: KeyframePolicy | None = None,
                 verification: Verification | None = None, depth: int | None = None):
        if not isinstance(matcher, Matcher):
            raise TypeError(f'CameraPipeline needs a superglue_ros.matcher.Matcher, got {type(matcher).__name__}')
        self.cuda = matcher.device.type == 'cuda'
        if depth is None:
            depth = 2 if self.cuda else 1
        if isinstance(depth, bool) or not isinstance(depth, Integral) or depth < 1:
            raise ValueError(f'depth (frames in flight) must be an integer >= 1, got {depth!r}')
        super().__init__(_PrefetchingMatcher(matcher), policy, verification)
        self.depth = int(depth)
        device = matcher.device
        # On the CPU, None: torch.cuda.stream(None) does nothing and the work runs where it is enqueued.
        self.copy_stream, self.extract_stream, self.match_stream = (
            torch.cuda.Stream(device) if self.cuda else None for _ in range(3))
        self._slots = [_UploadSlot(device, (self.copy_stream, self.extract_stream)) for _ in range(self.depth)]
        self._download = _Download(device)
        self._frames: deque[_Frame] = deque()  # submitted, not collected; oldest first
        self._submitted = 0

    @property
    def pending(self) -> int:
        """Frames submitted and not collected yet."""
        return len(self._frames)

    def submit(self, image: np.ndarray, stamp_s: float, color_order: str = 'bgr'):
        """Start a camera frame: its upload and SuperPoint are enqueued (and its SuperGlue when its
        keyframe is known); returns without waiting for the device.

        Same arguments as KeyframeFrontend.process. ImageError / ValueError for an unusable image or
        stamp (nothing submitted); RuntimeError when `depth` frames are in flight: collect() first.
        """
        if isinstance(stamp_s, bool) or not (isinstance(stamp_s, Real) and math.isfinite(stamp_s)):
            raise ValueError(f'stamp_s must be a finite number of seconds, got {stamp_s!r}')
        if len(self._frames) >= self.depth:
            raise RuntimeError(f'{len(self._frames)} frames in flight, the most this pipeline takes (depth '
                               f'{self.depth}): collect() one before submitting another')
        start = time.perf_counter()
        grey, scale = prepare_image(image, self.matcher.resize, color_order)  # ImageError: nothing changed
        prepared = time.perf_counter()
        slot = self._slots[self._submitted % self.depth]
        with self._engine:  # configure() waits: one extraction reads one set of settings
            features = self._extract(slot, grey, scale)
        self._submitted += 1
        self._frames.append(_Frame(image, float(stamp_s), color_order, slot, features, start,
                                   (prepared - start) * 1e3))
        if len(self._frames) == 1:  # the frames before it are collected: its keyframe is known
            self._enqueue_match(self._frames[0])  # on failure collect() tries again

    def collect(self) -> FrameResult:
        """The FrameResult of the oldest submitted frame, as KeyframeFrontend.process gives it; waits
        for its results on the device. timings_ms: 'preprocess' (host grey conversion), 'upload',
        'superpoint', 'superglue', 'download' (device time of each stage), 'extract' (upload +
        superpoint), 'match' (superglue + download), 'verify' (host), 'total' (submit to result)."""
        if not self._frames:
            raise RuntimeError('collect() with no frame in flight: submit() one first')
        frame = self._frames[0]
        if not frame.matched:  # its enqueueing failed earlier (e.g. out of memory): again, raising here
            self._enqueue_match(frame)
        download, features = self._download, frame.features
        download.downloaded.synchronize()  # the host's only wait for the device
        features.host_keypoints = download.keypoints[:len(features.scores)].numpy().copy()
        match = None
        if frame.keyframe is not None:
            size = len(frame.keyframe.scores)
            match = MatchResult(download.matches[:size].numpy().copy(), download.scores[:size].numpy().copy(),
                                {'superglue': download.matched.ms_since(download.match_start),
                                 'download': download.downloaded.ms_since(download.matched)})
        slot = frame.slot
        stages = {'preprocess': frame.preprocess_ms,
                  'upload': slot.uploaded.ms_since(slot.upload_start),
                  'superpoint': slot.extracted.ms_since(slot.extract_start),
                  'superglue': download.matched.ms_since(download.match_start),
                  'download': download.downloaded.ms_since(download.matched)}
        self.matcher.expected = (frame.image, features, frame.keyframe, match)
        try:
            with torch.cuda.stream(self.match_stream):  # any device work of the frontend follows the match
                result = KeyframeFrontend.process(self, frame.image, frame.stamp_s, frame.color_order)
        finally:
            self.matcher.expected = None
            self._frames.popleft()
        if self._frames:  # the next frame's keyframe is decided now: its SuperGlue can start
            try:
                self._enqueue_match(self._frames[0])
            except Exception:  # its own collect() tries again and raises; this frame's result is good
                pass
        result.timings_ms.update(stages, extract=stages['upload'] + stages['superpoint'],
                                 match=stages['superglue'] + stages['download'],
                                 total=(time.perf_counter() - frame.submitted_s) * 1e3)
        return result

    def process(self, image: np.ndarray, stamp_s: float, color_order: str = 'bgr') -> FrameResult:
        """KeyframeFrontend.process on the streams (submit, then collect); no other frame may be in flight."""
        if self._frames:
            raise RuntimeError(f'process() with {len(self._frames)} frame(s) in flight: collect() them first')
        self.submit(image, stamp_s, color_order)
        return self.collect()

    def process_stream(self, frames):
        """FrameResults of `frames` ((image, stamp_s) or (image, stamp_s, color_order)), in order, with
        up to `depth` frames in flight. With depth 2 the next frame's SuperPoint overlaps the current
        frame's SuperGlue; a result is returned once the frame after it is submitted (or the stream ends)."""
        for frame in frames:
            if len(self._frames) >= self.depth:
                yield self.collect()
            self.submit(*frame)
        while self._frames:
            yield self.collect()

    # -- enqueueing -----------------------------------------------------------------------------

    def _extract(self, slot: _UploadSlot, grey: np.ndarray, scale: tuple[float, float]) -> StreamFeatures:
        """Upload grey [H, W] on the copy stream and enqueue SuperPoint on the extract stream."""
        host, image = slot.buffers((1, 1) + grey.shape)
        slot.uploaded.synchronize()  # the host buffer's previous upload (its frame is collected: done long ago)
        host.numpy()[0, 0] = grey
        with torch.inference_mode():
            with torch.cuda.stream(self.copy_stream):
                slot.extracted.block(self.copy_stream)  # SuperPoint has read the device buffer's previous image
                slot.upload_start.record(self.copy_stream)
                if image is not host:
                    image.copy_(host, non_blocking=True)
                slot.uploaded.record(self.copy_stream)
            with torch.cuda.stream(self.extract_stream), self.matcher.autocast():
                slot.uploaded.block(self.extract_stream)
                slot.extract_start.record(self.extract_stream)
                pred = self.matcher.superpoint(image)
                slot.extracted.record(self.extract_stream)
        height, width = grey.shape
        return StreamFeatures(pred['keypoints'][0], pred['scores'][0], pred['descriptors'][0], (width, height), scale)

    def _enqueue_match(self, frame: _Frame):
        """Enqueue the oldest frame's SuperGlue against the keyframe it will be matched with (none when
        it becomes the keyframe directly) and the downloads of its results."""
        with self._engine:
            keyframe = self._keyframe
            # KeyframeFrontend.process's rule; were it to decide otherwise, it would match on the plain path
            direct = keyframe is None or frame.stamp_s < self._last_stamp_s
            frame.keyframe = None if direct else keyframe.features
            features, stream, download = frame.features, self.match_stream, self._download
            download.reserve(max(len(features.scores), 0 if direct else len(keyframe.features.scores)))
            with torch.inference_mode(), torch.cuda.stream(stream), self.matcher.autocast():
                frame.slot.extracted.block(stream)
                if self.cuda:  # made on the extract stream, used here: keep the memory until this stream is done
                    for tensor in (features.keypoints, features.scores, features.descriptors):
                        tensor.record_stream(stream)
                download.match_start.record(stream)
                if not direct:
                    encoded0 = self.matcher._encoded(frame.keyframe)  # cached in the keyframe's features
                    encoded1 = self.matcher._encoded(features)
                    pred = self.matcher.superglue.match(encoded0, encoded1)
                download.matched.record(stream)
                download.keypoints[:len(features.scores)].copy_(features.keypoints, non_blocking=True)
                if not direct:
                    size = len(frame.keyframe.scores)
                    download.matches[:size].copy_(pred['matches0'][0], non_blocking=True)
                    download.scores[:size].copy_(pred['matching_scores0'][0].float(), non_blocking=True)
                download.downloaded.record(stream)
            frame.matched = True
