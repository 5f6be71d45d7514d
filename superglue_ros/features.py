"""A frame's tracked features in the layout of VINS-Fusion's feature tracker (no ROS).

VINS-Fusion (Qin, Cao, Pan, Shen, 2019; after VINS-Mono, Qin, Li, Shen, T-RO 2018) feeds its estimator one
message per image: every tracked feature with its id, camera, normalised undistorted point (x, y, 1),
pixel (u, v) and velocity on the normalised plane. This module computes those from a FrameResult
(tracking.py); the node turns them into sensor_msgs/PointCloud (ros/messages.py: features_message).
VINS-Mono's estimator reads another channel layout (README).

Which keypoints, keeping ids consistent with Matches.track_ids and Keyframe.track_ids (the tracker
assigns ids only when a frame becomes a keyframe):
  a frame that is not a new keyframe  its keypoints matched to the keyframe (the inliers when geometric
                                      verification is on), each with the track id of its keyframe keypoint;
                                      unmatched keypoints have no id yet and are left out
  a frame that becomes the keyframe   all its keypoints, with Keyframe.track_ids: the matched ones continue
                                      their tracks, the others start new ones (VINS: "tracked features plus
                                      new ones with new ids")
Velocity: the change of the track's normalised point since the previous frame of this camera divided by
the stamp difference (1/s); 0 for a track not in the previous frame (as VINS's feature tracker).
"""
from dataclasses import dataclass

import numpy as np

from .geometry import Calibration
from .tracking import FrameResult, tracks_continue


@dataclass
class TrackedFeatures:
    """The features of one image of one camera, in VINS's terms. Row k is one feature."""
    camera_id: int              # 0 the left (or only) camera, 1 the right one
    track_ids: np.ndarray       # [K] uint64
    pixels: np.ndarray          # [K, 2] float32 (u, v) pixels of the image as given
    normalized: np.ndarray      # [K, 2] float64 (x, y) on the normalised image plane (z = 1), distortion removed
    velocity: np.ndarray        # [K, 2] float64 change of `normalized` per second since the previous frame


class FeatureVelocity:
    """Per camera: the previous frame's normalised point of each track, to give velocities (module doc).
    Belongs to the camera's frame thread."""

    def __init__(self, camera_id: int = 0):
        self.camera_id = camera_id
        self._previous: dict[int, np.ndarray] = {}  # track id -> (x, y) normalised, previous frame
        self._previous_stamp_s: float | None = None

    def features(self, result: FrameResult, calibration: Calibration | None) -> TrackedFeatures | None:
        """The TrackedFeatures of `result`'s frame, or None without a calibration (no normalised points:
        nothing to publish; the velocities restart with the next calibrated frame)."""
        if calibration is None:
            self._previous, self._previous_stamp_s = {}, None
            return None
        if result.is_new_keyframe:
            pixels = result.frame_features.keypoints_original()
            track_ids, normalized = result.new_keyframe_track_ids, calibration.normalize(pixels)
        else:
            tracked = tracks_continue(result.inlier, result.verified_with, len(result.confidence))
            pixels, track_ids = result.frame_points[tracked], result.track_ids[tracked]
            # float64 from the pixels, as for a keyframe (Matches' normalised points are float32: a feature that
            # did not move would get a velocity of float32 rounding / dt)
            normalized = calibration.normalize(pixels)
        return self.track(result.stamp_s, track_ids, pixels, normalized)

    def track(self, stamp_s: float, track_ids: np.ndarray, pixels: np.ndarray,
              normalized: np.ndarray) -> TrackedFeatures:
        """TrackedFeatures of this camera's features at stamp_s (seconds): track_ids [K], pixels [K, 2] (u, v),
        normalized [K, 2] (x, y, z = 1 plane), with their velocities since this camera's previous call. Also
        for features chosen by the caller, e.g. a rig's right image (its left-right inliers)."""
        normalized = np.asarray(normalized, np.float64)
        velocity = np.zeros((len(track_ids), 2))
        dt = None if self._previous_stamp_s is None else stamp_s - self._previous_stamp_s
        if dt is not None and dt > 0:
            for k, track_id in enumerate(track_ids.tolist()):
                previous = self._previous.get(track_id)
                if previous is not None:
                    velocity[k] = (normalized[k] - previous) / dt
        self._previous = dict(zip(track_ids.tolist(), normalized))
        self._previous_stamp_s = stamp_s
        return TrackedFeatures(self.camera_id, np.asarray(track_ids, np.uint64), np.asarray(pixels, np.float32),
                               normalized, velocity)
