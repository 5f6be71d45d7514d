"""ROS messages from the pipeline's results: Matches, Keyframe, StereoMatches, LoopCandidates, the MatchImages
and MatchKeyframes responses and the ~/match_image pictures. Arrays are copied into the messages as raw bytes
(array.array.frombytes), not element by element: a keyframe's descriptors are 256 floats per keypoint.
"""
import array

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Point32, Pose, Quaternion
from sensor_msgs.msg import CameraInfo, ChannelFloat32, PointCloud
from std_msgs.msg import Header
from superglue_ros.msg import Keyframe, LoopCandidates, Matches, StereoMatches

from ..features import TrackedFeatures
from ..keyframes import LoopCandidates as Candidates
from ..pipeline import KeyframePairResult, PairResult
from ..pose import RelativePose
from ..stereo import StereoResult
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
        header=header, camera=camera, keyframe_id=result.new_keyframe_id, reason=result.keyframe_reason,
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


def stereo_matches_message(result: FrameResult, left_camera: str, right_camera: str, header, right_header,
                           latency_ms: float, dropped_pairs: int, unpaired_frames: int) -> StereoMatches:
    """StereoMatches of one processed pair: `result` is the left image's, with its StereoResult."""
    stereo: StereoResult = result.stereo
    c = stereo.correspondences
    return StereoMatches(
        header=header, right_header=right_header, left_camera=left_camera, right_camera=right_camera,
        frame_index=result.frame_index, keyframe_id=result.keyframe_id,
        left_points=_array('f', c.points0.reshape(-1), np.float32),
        right_points=_array('f', c.points1.reshape(-1), np.float32),
        left_points_normalized=_array('f', c.normalized0.reshape(-1), np.float32),
        right_points_normalized=_array('f', c.normalized1.reshape(-1), np.float32),
        disparity=_array('f', stereo.disparity, np.float32), depth=_array('f', stereo.depth, np.float32),
        confidence=_array('f', c.confidence, np.float32),
        left_indices=_array('i', c.indices0, np.int32), right_indices=_array('i', c.indices1, np.int32),
        track_ids=_array('Q', stereo.track_ids, np.uint64), inlier=_array('B', c.inlier, np.uint8),
        verified_with=c.verified_with, baseline_m=float(stereo.baseline_m),
        left_keypoint_count=result.frame_keypoint_count, right_keypoint_count=len(stereo.right_features.scores),
        latency_ms=float(latency_ms), dropped_pairs=dropped_pairs, unpaired_frames=unpaired_frames)


def loop_candidates_message(candidates: Candidates, camera: str, header) -> LoopCandidates:
    """LoopCandidates of `camera`'s new keyframe; header: that keyframe image's std_msgs/Header."""
    return LoopCandidates(header=header, camera=camera, keyframe_id=candidates.keyframe_id,
                          candidate_ids=_array('Q', candidates.ids, np.uint64),
                          scores=_array('f', candidates.scores, np.float32))


def seconds_to_stamp(stamp_s: float) -> Time:
    """A stamp in seconds (float64: exact to about 0.3 microseconds today) as builtin_interfaces/Time."""
    nanoseconds = round(stamp_s * 1e9)
    return Time(sec=nanoseconds // 10 ** 9, nanosec=nanoseconds % 10 ** 9)


def fill_match_keyframes_response(result: KeyframePairResult, headers: tuple, response):
    """MatchKeyframes.Response filled with the correspondences of two stored keyframes (success set by the
    caller). headers: the std_msgs/Header of each keyframe image as stored (KeyframeStore.header), or None:
    then the stamp from the keyframe's stamp_s and no frame_id."""
    fill_match_images_response(result.pair, response)
    c = result.pair.correspondences
    response.header0, response.header1 = (header if header is not None else Header(stamp=seconds_to_stamp(k.stamp_s))
                                           for header, k in zip(headers, (result.keyframe0, result.keyframe1)))
    response.track_ids0, response.track_ids1 = (_array('Q', ids, np.uint64) for ids in result.track_ids)
    response.verified_with = c.verified_with
    response.points0_normalized = _array('f', c.normalized0.reshape(-1), np.float32)
    response.points1_normalized = _array('f', c.normalized1.reshape(-1), np.float32)
    response.pose_source, response.relative_pose, response.pose_inliers = (c.pose.source, pose_message(c.pose),
                                                                            c.pose.inliers)
    return response


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
    return _picture(keyframe_image, frame_image, result.keyframe_features, result.frame_features,
                    result.keyframe_indices, result.frame_indices, result.confidence, max_lines, text_lines)


def stereo_picture(left_image: tuple[np.ndarray, str], right_image: tuple[np.ndarray, str], result: FrameResult,
                   max_lines: int, text_lines=()) -> np.ndarray:
    """bgr8 picture left | right with the `max_lines` most confident left-right inliers of a rig's pair."""
    c = result.stereo.correspondences
    shown = c.kept()
    return _picture(left_image, right_image, result.frame_features, result.stereo.right_features,
                    c.indices0[shown], c.indices1[shown], c.confidence[shown], max_lines, text_lines)


def _picture(image0, image1, features0, features1, indices0, indices1, confidence, max_lines, text_lines):
    """image0 | image1 ((image, color_order) each) with the `max_lines` most confident of the
    correspondences features0's keypoint indices0[k] <-> features1's indices1[k]."""
    keypoints0, keypoints1 = features0.keypoints_original(), features1.keypoints_original()
    shown = np.argsort(-confidence, kind='stable')[:max_lines]
    matches0 = np.full(len(keypoints0), -1, np.int64)
    scores0 = np.zeros(len(keypoints0), np.float32)
    matches0[indices0[shown]] = indices1[shown]
    scores0[indices0[shown]] = confidence[shown]
    text_lines = list(text_lines)
    if len(shown) < len(confidence):
        text_lines.append(f'(lines: the {len(shown)} most confident of {len(confidence)} matches)')
    return draw_matches(to_bgr8(*image0), to_bgr8(*image1), keypoints0, keypoints1, matches0, scores0, text_lines)
