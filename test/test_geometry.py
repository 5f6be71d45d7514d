"""Two-view geometric verification (superglue_ros.geometry) on synthetic correspondences with known
inliers and outliers: two calibrated views of a 3D scene (fundamental) and a planar warp (homography).
Every outlier is placed at least OUTLIER_PX from where its model puts it, every inlier within 0.5 px,
so the expected mask is exact."""
import numpy as np
import pytest

from superglue_ros import geometry
from superglue_ros.geometry import MIN_POINTS, Verification

WIDTH, HEIGHT = 640, 480
CAMERA = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
OUTLIER_PX = 20.0


def rotation(rx, ry, rz):
    cx, cy, cz, sx, sy, sz = np.cos(rx), np.cos(ry), np.cos(rz), np.sin(rx), np.sin(ry), np.sin(rz)
    return (np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]))


def project(points3d, rot=np.eye(3), t=np.zeros(3)):
    p = (CAMERA @ (points3d @ rot.T + t).T).T
    return p[:, :2] / p[:, 2:]


def skew(v):
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def epipolar_distance(F, points0, points1):
    """Distance of points1 to the epipolar lines of points0, pixels."""
    lines = np.hstack([points0, np.ones((len(points0), 1))]) @ F.T
    return np.abs(np.sum(lines[:, :2] * points1, 1) + lines[:, 2]) / np.linalg.norm(lines[:, :2], axis=1)


def apply_homography(H, points):
    p = np.hstack([points, np.ones((len(points), 1))]) @ H.T
    return p[:, :2] / p[:, 2:]


def random_outliers(rng, count, points0, distance_to_model):
    """Random points in the second image that are at least OUTLIER_PX away from the model."""
    outliers = []
    while len(outliers) < count:
        candidate = rng.uniform([0, 0], [WIDTH, HEIGHT])
        if distance_to_model(points0[len(outliers)][None], candidate[None])[0] > OUTLIER_PX:
            outliers.append(candidate)
    return np.array(outliers).reshape(count, 2)


def two_view_scene(rng, inliers=150, outliers=60):
    """3D points seen by two cameras; returns points0, points1, true inlier mask (shuffled)."""
    rot, t = rotation(0.05, -0.1, 0.02), np.array([0.3, 0.05, 0.02])
    F = np.linalg.inv(CAMERA).T @ skew(t) @ rot @ np.linalg.inv(CAMERA)
    depth = rng.uniform(2, 8, inliers)
    pixels = rng.uniform([50, 50], [WIDTH - 50, HEIGHT - 50], (inliers, 2))
    points3d = np.hstack([pixels, np.ones((inliers, 1))]) @ np.linalg.inv(CAMERA).T * depth[:, None]
    good0, good1 = project(points3d), project(points3d, rot, t) + rng.normal(0, 0.2, (inliers, 2)).clip(-0.5, 0.5)
    bad0 = rng.uniform([0, 0], [WIDTH, HEIGHT], (outliers, 2))
    bad1 = random_outliers(rng, outliers, bad0, lambda a, b: epipolar_distance(F, a, b))
    return shuffle(rng, good0, good1, bad0, bad1)


def planar_scene(rng, inliers=100, outliers=50):
    H = np.array([[1.05, 0.04, -20.0], [-0.03, 0.98, 15.0], [1e-4, -5e-5, 1.0]])
    good0 = rng.uniform([0, 0], [WIDTH, HEIGHT], (inliers, 2))
    good1 = apply_homography(H, good0) + rng.normal(0, 0.2, (inliers, 2)).clip(-0.5, 0.5)
    bad0 = rng.uniform([0, 0], [WIDTH, HEIGHT], (outliers, 2))
    bad1 = random_outliers(rng, outliers, bad0, lambda a, b: np.linalg.norm(apply_homography(H, a) - b, axis=1))
    return shuffle(rng, good0, good1, bad0, bad1)


def shuffle(rng, good0, good1, bad0, bad1):
    truth = np.r_[np.ones(len(good0), np.uint8), np.zeros(len(bad0), np.uint8)]
    order = rng.permutation(len(truth))
    return np.vstack([good0, bad0])[order], np.vstack([good1, bad1])[order], truth[order]


@pytest.fixture(params=['usac', 'classic'])
def ransac(request, monkeypatch):
    """Each test runs with OpenCV's USAC MAGSAC++ and with the classic RANSAC fallback."""
    if request.param == 'classic':
        monkeypatch.setattr(geometry, '_USAC', None)
    return request.param


@pytest.mark.parametrize('seed', [0, 1])
def test_fundamental_finds_the_known_inliers(ransac, seed):
    points0, points1, truth = two_view_scene(np.random.default_rng(seed))
    mask = Verification('fundamental', threshold_px=3.0).inliers(points0, points1)
    assert mask.dtype == np.uint8 and mask.shape == truth.shape
    np.testing.assert_array_equal(mask, truth)


@pytest.mark.parametrize('seed', [0, 1])
def test_homography_finds_the_known_inliers(ransac, seed):
    points0, points1, truth = planar_scene(np.random.default_rng(seed))
    mask = Verification('homography', threshold_px=3.0).inliers(points0, points1)
    assert mask.dtype == np.uint8 and mask.shape == truth.shape
    np.testing.assert_array_equal(mask, truth)


def test_threshold_is_in_pixels(ransac):
    """Inliers displaced by 2 px: kept with a 3 px threshold, dropped with a 1 px one."""
    rng = np.random.default_rng(2)
    H = np.array([[1.0, 0.02, 5.0], [-0.01, 1.0, -3.0], [0, 0, 1.0]])
    points0 = rng.uniform([0, 0], [WIDTH, HEIGHT], (80, 2))
    exact1 = apply_homography(H, points0)
    shifted = np.arange(80) % 4 == 0
    angle = rng.uniform(0, 2 * np.pi, 80)
    points1 = exact1 + shifted[:, None] * 2.0 * np.c_[np.cos(angle), np.sin(angle)]
    loose = Verification('homography', threshold_px=3.0).inliers(points0, points1)
    strict = Verification('homography', threshold_px=1.0).inliers(points0, points1)
    np.testing.assert_array_equal(loose, np.ones(80, np.uint8))
    np.testing.assert_array_equal(strict, (~shifted).astype(np.uint8))


@pytest.mark.parametrize('method', ['fundamental', 'homography'])
def test_fewer_than_minimal_points_are_all_outliers(ransac, method):
    points0, points1, _ = planar_scene(np.random.default_rng(3), inliers=20, outliers=0)
    for count in range(MIN_POINTS[method]):
        mask = Verification(method).inliers(points0[:count], points1[:count])
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, np.zeros(count, np.uint8))


@pytest.mark.parametrize('method', ['fundamental', 'homography'])
def test_degenerate_points_are_all_outliers(ransac, method):
    same = np.full((30, 2), 100.0)
    np.testing.assert_array_equal(Verification(method).inliers(same, same), np.zeros(30, np.uint8))


def test_none_gives_an_empty_mask():
    points0, points1, _ = planar_scene(np.random.default_rng(4))
    verification = Verification()
    assert verification.method == 'none' and not verification.enabled
    mask = verification.inliers(points0, points1)
    assert mask.dtype == np.uint8 and mask.shape == (0,)


def test_accepts_float32_and_lists():
    points0, points1, truth = planar_scene(np.random.default_rng(5))
    mask = Verification('homography').inliers(points0.astype(np.float32).tolist(), points1.astype(np.float32))
    np.testing.assert_array_equal(mask, truth)


@pytest.mark.parametrize('settings, message', [
    (dict(method='affine'), "method must be one of ('none', 'fundamental', 'homography')"),
    (dict(method='homography', threshold_px=0.0), 'threshold_px must be a positive number'),
    (dict(method='homography', threshold_px=float('nan')), 'threshold_px must be a positive number'),
    (dict(method='homography', confidence=1.0), 'confidence must be a number in (0, 1)'),
    (dict(method='homography', max_iterations=0), 'max_iterations must be a positive integer'),
])
def test_bad_settings(settings, message):
    with pytest.raises(ValueError) as error:
        Verification(**settings)
    assert message in str(error.value)


@pytest.mark.parametrize('points0, points1, message', [
    (np.zeros((5, 3)), np.zeros((5, 2)), 'points0 must be an array of shape [K, 2]'),
    (np.zeros((5, 2)), np.zeros(10), 'points1 must be an array of shape [K, 2]'),
    (np.zeros((5, 2)), np.zeros((6, 2)), 'same length, got 5 and 6'),
    (np.full((5, 2), np.nan), np.zeros((5, 2)), 'points0 contains NaN or inf'),
])
def test_bad_points(points0, points1, message):
    with pytest.raises(ValueError) as error:
        Verification('fundamental').inliers(points0, points1)
    assert message in str(error.value)
