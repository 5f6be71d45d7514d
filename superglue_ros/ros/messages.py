"""ROS messages from the pipeline's results: Matches, Keyframe, the MatchImages response and the
~/match_image picture. Arrays are copied into the messages as raw bytes (array.array.frombytes),
not element by element: a keyframe's descriptors are 256 floats per keypoint.
"""
import array

import numpy as np
from geometry_msgs.msg import Point, Point32, Pose, Quaternion
from sensor_msgs.msg import CameraInfo, ChannelFloat32, PointCloud

from superglue_ros.msg import Keyframe, Matches

from ..features import TrackedFeatures
from ..pipeline import PairResult
from ..pose import RelativePose
from ..tracking import FrameResult
from ..image import to_bgr8
from ..visualization import draw_matches


def _array(typecode: str, values, dtype) -> array.array:
    """numpy values -> array.array of a message sequence field (float32 'f', int32 'i', uint8 'B', uint64 'Q')."""
    out = array.array(typecode)
    assert out.itemsize == np.dtype(dtype).itemsize
    out.frombytes(np.ascontiguousarray(values, dtype).tobytes())
    return out


def stamp_to_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def pose_message(pose: RelativePose) -> Pose:
    """geometry_msgs/Pose of a pose.RelativePose (T_keyframe_frame, optical frames)."""
    x, y, z, w = pose.quaternion()
    return Pose(position=Point(**dict(zip('xyz', (float(v) for v in pose.translation)))),
                orientation=Quaternion(x=float(x), y=float(y), z=float(z), w=float(w)))


def matches_message(result: FrameResult, camera: str, header, keyframe_header, camera_info: CameraInfo | None,
                    latency_ms: float, dropped_frames: int) -> Matches:
    """Matches of one processed frame of `camera`. header / keyframe_header: std_msgs/Header of the
    frame and of the keyframe the correspondences refer to."""
    return Matches(
        header=header, keyframe_header=keyframe_header, camera=camera, keyframe_id=result.keyframe_id,
        frame_index=result.frame_index, is_new_keyframe=result.is_new_keyframe,
        keyframe_points=_array('f', result.keyframe_points.reshape(-1), np.float32),
        frame_points=_array('f', result.frame_points.reshape(-1), np.float32),
        confidence=_array('f', result.confidence, np.float32),
        keyframe_indices=_array('i', result.keyframe_indices, np.int32),
        frame_indices=_array('i', result.frame_indices, np.int32),
        track_ids=_array('Q', result.track_ids, np.uint64),
        inlier=_array('B', result.inlier, np.uint8), verified_with=result.verified_with,
        keyframe_points_normalized=_array('f', result.keyframe_points_normalized.reshape(-1), np.float32),
        frame_points_normalized=_array('f', result.frame_points_normalized.reshape(-1), np.float32),
        pose_source=result.relative_pose.source, relative_pose=pose_message(result.relative_pose),
        pose_inliers=result.relative_pose.inliers,
        keyframe_keypoint_count=result.keyframe_keypoint_count, frame_keypoint_count=result.frame_keypoint_count,
        camera_info=camera_info or CameraInfo(), latency_ms=float(latency_ms), dropped_frames=dropped_frames)


def keyframe_message(result: FrameResult, camera: str, header, image_size: tuple[int, int],
                     camera_info: CameraInfo | None) -> Keyframe:
    """The features of the frame of `result`, which became `camera`'s new keyframe. image_size:
    (width, height) of the image as published."""
    features = result.frame_features
    descriptors = features.descriptors.float().cpu().numpy()    # [D, N]
    return Keyframe(
        header=header, camera=camera, keyframe_id=result.new_keyframe_id,
        image_width=image_size[0], image_height=image_size[1],
        keypoints=_array('f', features.keypoints_original().reshape(-1), np.float32),
        scores=_array('f', features.scores.float().cpu().numpy(), np.float32),
        track_ids=_array('Q', result.new_keyframe_track_ids, np.uint64),
        descriptor_dim=descriptors.shape[0],
        descriptors=_array('f', descriptors.T.reshape(-1), np.float32),  # keypoint-major
        camera_info=camera_info or CameraInfo())


# The channels of a features message, in VINS-Fusion's order (rosNodeTest.cpp, feature_callback: channels 0-5;
# it reads channels 6-8 as a ground-truth point whenever there are more than 5 channels, so they are sent, zero).
FEATURE_CHANNELS = ('id', 'camera_id', 'u', 'v', 'velocity_x', 'velocity_y', 'ground_truth_x', 'ground_truth_y',
                    'ground_truth_z')


FEATURE_ID_MODULO = 2 ** 24  # the `id` channel is float32: exact integers below 2^24


def features_message(header, features: list[TrackedFeatures]) -> PointCloud:
    """sensor_msgs/PointCloud in the VINS-Mono / VINS-Fusion feature-tracker layout (README, features topic):
    one point (x, y, 1) per feature on the normalised image plane of its camera, and FEATURE_CHANNELS. Takes
    the features of one or more cameras of one stamp (a stereo pair: camera_id 0 and 1). Ids are sent as
    float32, modulo 2^24 to stay exact (VINS reads them back with a cast to int)."""
    if not features:
        raise ValueError('features_message needs the TrackedFeatures of at least one camera')
    track_ids, pixels, normalized, velocity = (np.concatenate([getattr(f, name) for f in features])
                                               for name in ('track_ids', 'pixels', 'normalized', 'velocity'))
    # float32 holds integers exactly only up to 2^24: ids are sent modulo 2^24 (FEATURE_ID_MODULO), so tracks
    # fewer than 2^24 ids apart never reach VINS as one feature after a long run
    track_ids = np.asarray(track_ids, np.uint64) % np.uint64(FEATURE_ID_MODULO)
    camera_ids = np.concatenate([np.full(len(f.track_ids), f.camera_id) for f in features])
    zeros = np.zeros(len(track_ids))
    columns = (track_ids, camera_ids, pixels[:, 0], pixels[:, 1], velocity[:, 0], velocity[:, 1], zeros, zeros, zeros)
    return PointCloud(header=header,
                      points=[Point32(x=float(x), y=float(y), z=1.0) for x, y in normalized.tolist()],
                      channels=[ChannelFloat32(name=name, values=_array('f', values, np.float32))
                                for name, values in zip(FEATURE_CHANNELS, columns)])


def fill_match_images_response(pair: PairResult, response):
    """MatchImages.Response filled with the correspondences of `pair` (success set by the caller)."""
    c = pair.correspondences
    response.points0 = _array('f', c.points0.reshape(-1), np.float32)
    response.points1 = _array('f', c.points1.reshape(-1), np.float32)
    response.confidence = _array('f', c.confidence, np.float32)
    response.indices0 = _array('i', c.indices0, np.int32)
    response.indices1 = _array('i', c.indices1, np.int32)
    response.inlier = _array('B', c.inlier, np.uint8)
    response.keypoint_count0, response.keypoint_count1 = pair.keypoint_counts
    return response


def match_picture(keyframe_image: tuple[np.ndarray, str], frame_image: tuple[np.ndarray, str],
                  result: FrameResult, max_lines: int, text_lines=()) -> np.ndarray:
    """bgr8 picture keyframe | frame with the `max_lines` most confident matches of `result`.

    keyframe_image / frame_image: (image, color_order) as the images were given to the front-end."""
    keypoints0 = result.keyframe_features.keypoints_original()
    keypoints1 = result.frame_features.keypoints_original()
    shown = np.argsort(-result.confidence, kind='stable')[:max_lines]
    matches0 = np.full(len(keypoints0), -1, np.int64)
    scores0 = np.zeros(len(keypoints0), np.float32)
    matches0[result.keyframe_indices[shown]] = result.frame_indices[shown]
    scores0[result.keyframe_indices[shown]] = result.confidence[shown]
    text_lines = list(text_lines)
    if len(shown) < len(result.confidence):
        text_lines.append(f'(lines: the {len(shown)} most confident of {len(result.confidence)} matches)')
    return draw_matches(to_bgr8(*keyframe_image), to_bgr8(*frame_image), keypoints0, keypoints1, matches0, scores0,
                        text_lines)
