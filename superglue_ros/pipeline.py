"""One camera's frame path: extraction and matching on the camera's own CUDA streams, then its tracker.

    matcher = Matcher.from_weights('superpoint', 'indoor', max_keypoints=1024)  # shared by the cameras
    camera = CameraPipeline(matcher, KeyframePolicy())                          # one per camera (and thread)
    result = camera.process(image, stamp_s)          # FrameResult (tracking.py)
    for result in camera.process_stream(frames):     # (image, stamp_s) in, FrameResult out, in order
        publish(result)
    pair = match_pair(matcher, image0, image1)       # two given images, no keyframe (the match service)
    pair = match_keyframes(matcher, camera.keyframes, 3, 41)  # two stored keyframes, their stored features

The path of one frame (submit, then collect):
  host     Matcher.upload: validation; grey + resize on the host only when a resize is set
  copy     the uploaded bytes (uint8 / uint16, grey or colour, as the camera sent them) into a
           pinned host buffer and to a device buffer, non_blocking; both reused frame after frame
  extract  once the upload is done (event): grey conversion on the device (bit-identical to
           cv2.cvtColor) and SuperPoint (Matcher.detect)
  match    once the extraction is done (event): SuperGlue against the keyframe the tracker names
           (Matcher.superglue_match; the keyframe's encoding is cached), then the keypoints,
           matches and scores copied into pinned host buffers, non_blocking
  host     collect(): waits for that last copy (an event, never the whole device), builds the
           correspondences in pixels of the image as given, verifies them (geometry.py) and hands
           them to the KeyframeTracker, which decides the keyframe (tracking.py)

A frame's SuperGlue is enqueued as soon as its keyframe is known, i.e. once the frame before it
is collected. With two frames in flight (depth 2, the default on a GPU), frame N+1's upload and
SuperPoint run while frame N's SuperGlue does. Stage timings come from CUDA events, read in collect().
On the CPU the same code runs inline (no streams, depth 1): pipelined and sequential results are
the same, bit for bit.

A stereo rig is its left camera's pipeline given the right image with each left one (submit's `right`):
SuperPoint runs on both images in one batch of two, and on the match stream SuperGlue matches the left
image against the right one after its keyframe match (the left encoding is computed once for both);
collect() verifies the left-right matches (stereo.py: rows and disparity on a rectified pair, else the
fundamental matrix), hands the left keypoints' depth to the tracker (Keyframe.depth of a new keyframe)
and gives each left-right inlier its left keypoint's track id (FrameResult.stereo).

Several cameras: one CameraPipeline per camera on one shared Matcher (one copy of the weights), each
driven by its own thread; their streams run concurrently, and the kernels release the GIL.
submit / collect / process / process_stream belong to the camera's thread; request_new_keyframe,
policy and verification may be set from any thread; settings change on the shared Matcher
(Matcher.configure) and apply to frames submitted afterwards.
"""
import math
import time
from collections import deque
from dataclasses import dataclass, field, replace
from numbers import Integral, Real

import numpy as np
import torch
from torch import Tensor

from .geometry import Calibration, Verification
from .image import ImageError, grey_native, mask_at
from .matcher import Features, Matcher, StageClock
from .pose import relative_pose
from .stereo import StereoGeometry, StereoVerification
from .keyframes import KeyframeStore
from .tracking import Correspondences, FrameResult, Keyframe, KeyframePolicy, KeyframeTracker


def verify(correspondences: Correspondences, verification: Verification, calibration0: Calibration | None = None,
           calibration1: Calibration | None = None, depth0: np.ndarray | None = None) -> Correspondences:
    """The correspondences completed, in place (and returned): the points on the normalised image plane
    when both images have a calibration, the inlier flags and model of `verification` ('essential' falls
    back to 'fundamental' without calibrations: verified_with says which model was fitted), and with
    'essential' the relative pose T_image0_image1 (pose.relative_pose; metric by PnP where depth0, [N0]
    metres per keypoint of image 0 with NaN unknown, gives enough 3-D points)."""
    c, normalized = correspondences, None
    if calibration0 is not None and calibration1 is not None:
        normalized = calibration0.normalize(c.points0), calibration1.normalize(c.points1)  # once: stored and fitted
        c.normalized0, c.normalized1 = (points.astype(np.float32) for points in normalized)
    c.inlier, c.model = verification.fit(c.points0, c.points1, calibration0, calibration1, normalized)
    c.verified_with = verification.method_for(calibration0, calibration1)
    if c.verified_with == 'essential':
        c.pose = relative_pose(c.model, *normalized, c.inlier, None if depth0 is None else depth0[c.indices0],
                               verification.normalized_threshold(calibration0, calibration1))
    return c


@dataclass
class PairResult:
    """Two images matched with each other (match_pair). Correspondence k: points0[k] <-> points1[k]."""
    correspondences: Correspondences  # pixels of the images as given
    features0: Features
    features1: Features
    timings_ms: dict = field(default_factory=dict)  # 'preprocess', 'superpoint', 'superglue', 'verify', 'total'

    @property
    def keypoint_counts(self) -> tuple[int, int]:
        return len(self.features0.scores), len(self.features1.scores)


def match_pair(matcher: Matcher, image0: np.ndarray, image1: np.ndarray, color_order0: str = 'bgr',
               color_order1: str = 'bgr', verification: Verification | None = None,
               calibration0: Calibration | None = None, calibration1: Calibration | None = None) -> PairResult:
    """Match two images with the matcher (the same stages as a camera frame, on the current stream),
    then verify() the correspondences. ImageError for an unusable image (naming image0 or image1),
    ResourceError when memory runs out or the pair is over max_matching_memory_mb."""
    start = time.perf_counter()
    features = []
    for name, image, color_order in (('image0', image0, color_order0), ('image1', image1, color_order1)):
        try:
            features.append(matcher.extract(image, color_order))
        except ImageError as e:
            raise ImageError(f'{name}: {e}') from None
    features0, features1 = features
    match = matcher.match(features0, features1)
    verifying = time.perf_counter()
    correspondences = verify(Correspondences.from_matches(match.matches0, match.matching_scores0,
                                                          features0.keypoints_original(),
                                                          features1.keypoints_original()),
                             verification or Verification(), calibration0, calibration1)
    end = time.perf_counter()
    timings = {stage: features0.timings_ms[stage] + features1.timings_ms[stage] for stage in ('preprocess', 'superpoint')}
    return PairResult(correspondences, features0, features1,
                      {**timings, **match.timings_ms, 'verify': (end - verifying) * 1e3, 'total': (end - start) * 1e3})


@dataclass
class KeyframePairResult:
    """Two stored keyframes matched with each other (match_keyframes): pair.correspondences in pixels of
    the keyframe images as given, k-th keypoint of keyframe0 <-> k-th of keyframe1."""
    pair: PairResult
    keyframe0: Keyframe
    keyframe1: Keyframe

    @property
    def track_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """[K] uint64 track ids of each correspondence's keypoint in keyframe0 and in keyframe1."""
        c = self.pair.correspondences
        return self.keyframe0.track_ids[c.indices0], self.keyframe1.track_ids[c.indices1]


def match_keyframes(matcher: Matcher, keyframes: KeyframeStore, keyframe_id0: int, keyframe_id1: int,
                    verification: Verification | None = None) -> KeyframePairResult:
    """Match two keyframes of a camera's store with SuperGlue on their stored features (no image, no
    extraction; KeyframeStore.for_matching), then verify() the correspondences with the keyframes'
    calibrations (and keyframe 0's stereo depth: a metric relative pose, T_keyframe0_keyframe1). KeyError naming an unknown or evicted id; ResourceError as Matcher.match. Runs on the
    caller's thread and current stream; the camera's frames are not held up by it (the store's lock
    is held only to look the keyframes up)."""
    start = time.perf_counter()
    keyframe0, features0 = keyframes.for_matching(keyframe_id0, matcher.device)
    keyframe1, features1 = keyframes.for_matching(keyframe_id1, matcher.device)
    match = matcher.match(features0, features1)
    verifying = time.perf_counter()
    correspondences = verify(Correspondences.from_matches(match.matches0, match.matching_scores0,
                                                          keyframe0.keypoints, keyframe1.keypoints),
                             verification or Verification(), keyframe0.calibration, keyframe1.calibration,
                             keyframe0.depth)
    end = time.perf_counter()
    timings = {**match.timings_ms, 'verify': (end - verifying) * 1e3, 'total': (end - start) * 1e3}
    return KeyframePairResult(PairResult(correspondences, features0, features1, timings), keyframe0, keyframe1)


class _UploadSlot:
    """The upload buffers of one frame in flight, reused every `depth` frames: pinned host memory and
    device memory of the uploaded array's shape and dtype (new ones only when those change)."""

    def __init__(self):
        self.host = self.device = None
        self.clock = None  # StageClock of the last frame that used the buffers

    def buffers(self, array: np.ndarray, device: torch.device, streams) -> tuple[Tensor, Tensor]:
        """(pinned host, device) buffers holding `array` (host side filled); `streams` use the device one."""
        if self.host is None or tuple(self.host.shape) != array.shape or self.host.numpy().dtype != array.dtype:
            self.host = torch.from_numpy(np.empty_like(array)).pin_memory()
            self.device = torch.empty_like(self.host, device=device)
            for stream in streams:  # freed while still queued there (size change): not reused before it ends
                self.device.record_stream(stream)
        elif self.clock is not None:
            self.clock.marks['uploaded'].synchronize()  # its last upload left the host buffer (long ago)
        self.host.numpy()[...] = array
        return self.host, self.device


class _Download:
    """Pinned host buffers the match stream copies one frame's results into (one frame's matching is
    in flight at a time); grown by powers of two."""

    def __init__(self):
        self.capacity = 0
        self.keypoints = self.matches = self.scores = None

    def reserve(self, size: int):
        if size > self.capacity:
            self.capacity = 1 << max(size - 1, 255).bit_length()
            self.keypoints = torch.empty((self.capacity, 2), dtype=torch.float32).pin_memory()
            self.matches = torch.empty(self.capacity, dtype=torch.int64).pin_memory()
            self.scores = torch.empty(self.capacity, dtype=torch.float32).pin_memory()


@dataclass
class _Frame:
    """A submitted frame until it is collected."""
    stamp_s: float
    calibration: object
    features: Features
    clock: StageClock
    submitted_s: float                   # time.perf_counter() at submit
    preprocess_ms: float
    matched: bool = False                # its SuperGlue and downloads are enqueued
    keyframe: Keyframe | None = None     # what it is matched against (tracker.keyframe_for)
    prediction: dict | None = None       # on the CPU: SuperGlue's tensors, read directly
    right: Features | None = None        # a rig's right image (stereo), else None
    stereo_geometry: StereoGeometry | None = None
    stereo_prediction: dict | None = None  # on the CPU: SuperGlue left against right
    frame_id: str = ''                   # its optical frame (tracker.keyframe_for)


class CameraPipeline:
    """The frame path of one camera (module doc).

    matcher: the Matcher shared by the cameras. policy: tracking.KeyframePolicy. verification:
    geometry.Verification (default off). depth: frames in flight at most; 2 (the default on a GPU):
    frame N+1's SuperPoint overlaps frame N's SuperGlue; 1 (the default on the CPU, where nothing
    runs concurrently and a second frame in flight only delays the first one's result): no overlap.
    mask: None, or the camera's detection mask [H, W] bool of its image size, False where no keypoint
    may be (image.read_mask); resized to the processed size (INTER_NEAREST) and kept on the device.
    right_mask: the same for a rig's right camera.
    stereo: stereo.StereoVerification of the left-right matches when this is a rig's left camera
    (default: the settings' defaults).
    keyframes: the camera's keyframe store (keyframes.KeyframeStore; default: one of the default size).
    """

    def __init__(self, matcher: Matcher, policy: KeyframePolicy | None = None,
                 verification: Verification | None = None, depth: int | None = None,
                 mask: np.ndarray | None = None, right_mask: np.ndarray | None = None,
                 stereo: StereoVerification | None = None, keyframes: KeyframeStore | None = None):
        if not isinstance(matcher, Matcher):
            raise TypeError(f'CameraPipeline needs a superglue_ros.matcher.Matcher, got {type(matcher).__name__}')
        self.matcher = matcher
        self.tracker = KeyframeTracker(policy, keyframes)
        self.verification = Verification() if verification is None else verification
        self.stereo = StereoVerification() if stereo is None else stereo
        self.cuda = matcher.device.type == 'cuda'
        depth = (2 if self.cuda else 1) if depth is None else depth
        if isinstance(depth, bool) or not isinstance(depth, Integral) or depth < 1:
            raise ValueError(f'depth (frames in flight) must be an integer >= 1, got {depth!r}')
        self.depth = int(depth)
        # On the CPU, None: torch.cuda.stream(None) does nothing and the work runs where it is enqueued.
        self.copy_stream, self.extract_stream, self.match_stream = (
            torch.cuda.Stream(matcher.device) if self.cuda else None for _ in range(3))
        self._slots = [_UploadSlot() for _ in range(self.depth)]
        self._download = _Download()
        self._stereo_download = _Download()  # right keypoints, left -> right matches and scores
        self._frames: deque[_Frame] = deque()  # submitted, not collected; oldest first
        self._submitted = 0
        self.masks = (mask, right_mask)  # of the left (or only) image, of a rig's right image
        self._device_masks = {}  # (side, given size, processed size) -> [h, w] bool on the device

    # -- live settings --------------------------------------------------------------------------

    @property
    def policy(self) -> KeyframePolicy:
        return self.tracker.policy

    @policy.setter
    def policy(self, policy: KeyframePolicy):
        self.tracker.policy = policy

    @property
    def verification(self) -> Verification:
        return self._verification

    @verification.setter
    def verification(self, verification: Verification):
        if not isinstance(verification, Verification):
            raise TypeError(f'verification must be a geometry.Verification, got {type(verification).__name__}')
        self._verification = verification

    @property
    def stereo(self) -> StereoVerification:
        return self._stereo

    @stereo.setter
    def stereo(self, stereo: StereoVerification):
        if not isinstance(stereo, StereoVerification):
            raise TypeError(f'stereo must be a stereo.StereoVerification, got {type(stereo).__name__}')
        self._stereo = stereo

    def request_new_keyframe(self):
        """The next frame to be matched becomes the keyframe (reason 'requested'); returns at once."""
        self.tracker.request_new_keyframe()

    @property
    def keyframes(self) -> KeyframeStore:
        """The camera's keyframe store; its newest entry is the keyframe frames are matched against."""
        return self.tracker.keyframes

    @property
    def pending(self) -> int:
        """Frames submitted and not collected yet."""
        return len(self._frames)

    # -- frames -----------------------------------------------------------------------------------

    def submit(self, image: np.ndarray, stamp_s: float, color_order: str = 'bgr', calibration=None,
               right: np.ndarray | None = None, stereo_geometry: StereoGeometry | None = None, frame_id: str = ''):
        """Start a camera frame: its upload and SuperPoint are enqueued (and its SuperGlue when its
        keyframe is known); returns without waiting for the device.

        image: grey or colour numpy array (image.py), stamp_s: its capture time in seconds,
        calibration: geometry.Calibration of the camera or None. A rig's left camera also gets the
        right image of the pair (same size, type and color_order) and the pair's StereoGeometry (None:
        no P in the camera_infos). frame_id: the image's optical frame (std_msgs/Header.frame_id): a frame
        whose frame_id is not its keyframe's becomes the keyframe (reason 'frame_changed'). ImageError / ValueError for an unusable image or stamp (or a right
        image that does not fit the left one), ResourceError when memory runs out (nothing submitted);
        RuntimeError when `depth` frames are in flight: collect() first.
        """
        if isinstance(stamp_s, bool) or not (isinstance(stamp_s, Real) and math.isfinite(stamp_s)):
            raise ValueError(f'stamp_s must be a finite number of seconds, got {stamp_s!r}')
        if len(self._frames) >= self.depth:
            raise RuntimeError(f'{len(self._frames)} frames in flight, the most this pipeline takes (depth '
                               f'{self.depth}): collect() one before submitting another')
        start = time.perf_counter()
        upload = self.matcher.upload(image, color_order)  # ImageError: nothing changed
        uploads, batch = [upload], upload.channels_last[None]  # [B, h, w, C]: the left (or only) image, the right
        if right is not None:
            try:
                right_upload = self.matcher.upload(right, color_order)
            except ImageError as e:
                raise ImageError(f'right image: {e}') from None
            if right_upload.array.shape != upload.array.shape and right_upload.processed_size == upload.processed_size:
                # one image is already at `resize` and stays in colour, the other was resized to grey: both grey
                # (cv2.cvtColor, bit-identical to the device conversion) so that they go in one batch
                upload, right_upload = (replace(u, array=np.ascontiguousarray(grey_native(u.array, u.color_order)))
                                        for u in (upload, right_upload))
            if (right_upload.array.shape, right_upload.array.dtype) != (upload.array.shape, upload.array.dtype):
                raise ImageError(f'the right image ({right.shape}, {right.dtype}) of a stereo pair must have the size '
                                 f'and type of the left one ({image.shape}, {image.dtype}): publish both cameras '
                                 'at one size and encoding (or set a resize)')
            uploads = [upload, right_upload]
            batch = np.stack([upload.channels_last, right_upload.channels_last])
        masks = self._device_masks_of(uploads)             # likewise
        prepared = time.perf_counter()
        clock = StageClock(self.matcher.device)
        slot = self._slots[self._submitted % self.depth]
        with torch.cuda.stream(self.copy_stream):
            if self.cuda:
                if slot.clock is not None:  # SuperPoint has read the device buffer's previous image
                    slot.clock.wait('extracted', self.copy_stream)
                host, image_tensor = slot.buffers(batch, self.matcher.device,
                                                  (self.copy_stream, self.extract_stream))
                clock.mark('upload_start', self.copy_stream)
                image_tensor.copy_(host, non_blocking=True)
            else:
                clock.mark('upload_start')
                image_tensor = torch.from_numpy(batch)
            clock.mark('uploaded', self.copy_stream)
        with torch.cuda.stream(self.extract_stream):
            clock.wait('uploaded', self.extract_stream)
            clock.mark('extract_start', self.extract_stream)
            features = self.matcher.detect(image_tensor, uploads, masks)  # one batch: both images of a pair
            clock.mark('extracted', self.extract_stream)
        slot.clock = clock
        self._submitted += 1
        self._frames.append(_Frame(float(stamp_s), calibration, features[0], clock, start, (prepared - start) * 1e3,
                                   right=features[1] if right is not None else None, stereo_geometry=stereo_geometry,
                                   frame_id=frame_id))
        if len(self._frames) == 1:  # the frames before it are collected: its keyframe is known
            try:
                self._enqueue_match(self._frames[0])
            except BaseException:  # ResourceError: nothing submitted, the next frame works
                self._frames.pop()
                raise

    def collect(self) -> FrameResult:
        """The FrameResult of the oldest submitted frame; waits for its results on the device.
        timings_ms: 'preprocess' (host), 'upload', 'superpoint', 'superglue', 'download' (device time
        of each stage), 'verify' (host), 'total' (submit to result). A frame whose matching fails
        (ResourceError) is dropped with that error; the tracker is unchanged."""
        if not self._frames:
            raise RuntimeError('collect() with no frame in flight: submit() one first')
        frame = self._frames.popleft()
        try:
            if not frame.matched:  # enqueueing failed when the previous frame was collected: again, raising
                self._enqueue_match(frame)
            result = self._finish(frame)
        finally:
            if self._frames:  # the next frame's keyframe is decided now: its SuperGlue can start
                try:
                    self._enqueue_match(self._frames[0])
                except Exception:  # its own collect() tries again and raises; this frame's result stands
                    pass
        return result

    def process(self, image: np.ndarray, stamp_s: float, color_order: str = 'bgr', calibration=None,
                right: np.ndarray | None = None, stereo_geometry: StereoGeometry | None = None,
                frame_id: str = '') -> FrameResult:
        """submit() then collect(); no other frame may be in flight."""
        if self._frames:
            raise RuntimeError(f'process() with {len(self._frames)} frame(s) in flight: collect() them first')
        self.submit(image, stamp_s, color_order, calibration, right, stereo_geometry, frame_id)
        return self.collect()

    def process_stream(self, frames):
        """FrameResults of `frames` ((image, stamp_s[, color_order[, calibration[, right, stereo_geometry[,
        frame_id]]]]), as submit() takes them), in order, with up to `depth` frames in flight; a result is
        returned once the frame after it is submitted (or the stream ends)."""
        for frame in frames:
            if len(self._frames) >= self.depth:
                yield self.collect()
            self.submit(*frame)
        while self._frames:
            yield self.collect()

    def _device_masks_of(self, uploads) -> Tensor | None:
        """The detection masks of a batch (the image, or a rig's left and right images) at the processed
        size on the device, [B, h, w] bool (each made once per size; all True for an image without a mask),
        or None when no image of the batch has one. ImageError when an image is not of its mask's size."""
        if all(mask is None for mask in self.masks[:len(uploads)]):
            return None
        masks = []
        for side, (mask, upload) in enumerate(zip(self.masks, uploads)):
            key = (side, upload.size, upload.processed_size)
            if key not in self._device_masks:
                at = np.ones(upload.processed_size[::-1], bool) if mask is None else mask_at(mask, upload)
                self._device_masks[key] = torch.from_numpy(at).to(self.matcher.device)
            masks.append(self._device_masks[key])
        return torch.stack(masks)

    # -- stages -----------------------------------------------------------------------------------

    def _enqueue_match(self, frame: _Frame):
        """Enqueue the oldest frame's SuperGlue against the keyframe the tracker names for it (none:
        it becomes the keyframe), for a rig's pair also left against right, and the copies of the
        results to the host."""
        frame.keyframe = self.tracker.keyframe_for(frame.stamp_s, frame.frame_id)
        features, clock, stream = frame.features, frame.clock, self.match_stream
        with torch.cuda.stream(stream):
            clock.wait('extracted', stream)
            clock.mark('match_start', stream)
            if self.cuda:  # made on the extract stream, used here: keep the memory until this stream is done
                for image in (features, frame.right) if frame.right is not None else (features,):
                    for tensor in (image.keypoints, image.scores, image.descriptors):
                        tensor.record_stream(stream)
            prediction = stereo = None
            if frame.keyframe is not None:
                prediction = self.matcher.superglue_match(frame.keyframe.features, features)
            if frame.right is not None:
                stereo = self.matcher.superglue_match(features, frame.right)
            clock.mark('matched', stream)
            if self.cuda:
                download, size = self._download, len(features.scores)
                download.reserve(max(size, len(frame.keyframe.features.scores) if frame.keyframe else 0))
                download.keypoints[:size].copy_(features.keypoints, non_blocking=True)
                if prediction is not None:
                    keyframe_size = len(frame.keyframe.features.scores)
                    download.matches[:keyframe_size].copy_(prediction['matches0'][0], non_blocking=True)
                    download.scores[:keyframe_size].copy_(prediction['matching_scores0'][0].float(), non_blocking=True)
                if stereo is not None:
                    download, right_size = self._stereo_download, len(frame.right.scores)
                    download.reserve(max(size, right_size))
                    download.keypoints[:right_size].copy_(frame.right.keypoints, non_blocking=True)
                    download.matches[:size].copy_(stereo['matches0'][0], non_blocking=True)
                    download.scores[:size].copy_(stereo['matching_scores0'][0].float(), non_blocking=True)
            else:
                frame.prediction, frame.stereo_prediction = prediction, stereo
            clock.mark('downloaded', stream)
        frame.matched = True

    def _finish(self, frame: _Frame) -> FrameResult:
        """Host part of collect(): results from the download buffers, correspondences, tracker."""
        clock, features, keyframe = frame.clock, frame.features, frame.keyframe
        stages = {'upload': clock.ms('upload_start', 'uploaded'),  # waits for the frame's last copy
                  'superpoint': clock.ms('extract_start', 'extracted'),
                  'superglue': clock.ms('match_start', 'matched'),
                  'download': clock.ms('matched', 'downloaded')}
        if self.cuda:
            download = self._download
            features.keypoints_host = download.keypoints[:len(features.scores)].numpy().copy()
        verifying = time.perf_counter()
        correspondences = None
        if keyframe is not None:
            size = len(keyframe.features.scores)
            if self.cuda:
                matches0, scores0 = download.matches[:size].numpy().copy(), download.scores[:size].numpy().copy()
            else:
                matches0 = frame.prediction['matches0'][0].numpy()
                scores0 = frame.prediction['matching_scores0'][0].float().numpy()
            # one camera: a keyframe taken before its first camera_info has the calibration of its frames
            keyframe_calibration = keyframe.calibration or frame.calibration
            correspondences = verify(Correspondences.from_matches(matches0, scores0,
                                                                  keyframe.keypoints, features.keypoints_original()),
                                     self.verification, keyframe_calibration, frame.calibration, keyframe.depth)
        stereo = None
        if frame.right is not None:
            size = len(features.scores)
            if self.cuda:
                download = self._stereo_download
                frame.right.keypoints_host = download.keypoints[:len(frame.right.scores)].numpy().copy()
                matches0, scores0 = download.matches[:size].numpy().copy(), download.scores[:size].numpy().copy()
            else:
                matches0 = frame.stereo_prediction['matches0'][0].numpy()
                scores0 = frame.stereo_prediction['matching_scores0'][0].float().numpy()
            stereo = self.stereo.verify(Correspondences.from_matches(matches0, scores0, features.keypoints_original(),
                                                                     frame.right.keypoints_original()),
                                        frame.stereo_geometry, size)
            stereo.right_features = frame.right
        verified = time.perf_counter()
        result = self.tracker.update(features, frame.stamp_s, correspondences, frame.calibration,
                                     None if stereo is None else stereo.keypoint_depth, frame.frame_id)
        if stereo is not None:
            result.stereo = stereo.with_track_ids(result)
        result.timings_ms = {'preprocess': frame.preprocess_ms, **stages,
                             'verify': (verified - verifying) * 1e3,
                             'total': (time.perf_counter() - frame.submitted_s) * 1e3}
        return result
