"""The synthetic sequence: stored ground-truth homographies agree with the rendered pixels, with the
stored camera (intrinsics and poses), and between any two frames; generation is deterministic and
the texture gives a corner detector plenty to find."""
import json

import cv2
import numpy as np
import pytest

from superglue_ros.demo import synthetic
from superglue_ros.demo.synthetic import SEQUENCE_FILE, generate_sequence, load_sequence

SIZE = (640, 480)
FRAMES = 10
SEED = 3


@pytest.fixture(scope='module')
def sequence(tmp_path_factory):
    return generate_sequence(tmp_path_factory.mktemp('synthetic'), num_frames=FRAMES, size=SIZE, seed=SEED)


def project(H, points):
    return cv2.perspectiveTransform(np.asarray(points, np.float64).reshape(-1, 1, 2), H).reshape(-1, 2)


def blob_centre(image: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre (x, y) of the bright blob in a grey image, around its maximum."""
    y, x = np.unravel_index(np.argmax(image), image.shape)
    window = image[y - 12:y + 13, x - 12:x + 13].astype(np.float64)
    ys, xs = np.mgrid[y - 12:y + 13, x - 12:x + 13]
    return np.array([(xs * window).sum(), (ys * window).sum()]) / window.sum()


def test_marker_lands_where_the_stored_homography_maps_it(sequence):
    """Render a texture holding one Gaussian marker along the same camera path: its position in
    every frame is the stored homography applied to its position in frame 0."""
    K = synthetic.intrinsics(SIZE)
    rotations, positions = synthetic.camera_path(FRAMES, SEED)
    from_texture, (width, height) = synthetic.scene_homographies(K, rotations, positions, SIZE)
    # marker on the plane point seen 60 px left of the centre of frame 0, off the texture pixel grid
    marker = project(np.linalg.inv(from_texture[0]), [[SIZE[0] / 2 - 60, SIZE[1] / 2]])[0] + [0.3, 0.7]
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    texture = np.exp(-((xs - marker[0]) ** 2 + (ys - marker[1]) ** 2) / (2 * 3.0 ** 2))
    texture = np.repeat(np.round(texture * 255).astype(np.uint8)[..., None], 3, axis=2)

    centres = [blob_centre(synthetic.render(texture, H, SIZE)[..., 0]) for H in from_texture]
    seen_moving = max(np.linalg.norm(c - centres[0]) for c in centres)
    assert seen_moving > 20, 'the marker should move across the frames'
    for i, centre in enumerate(centres):
        assert np.linalg.norm(project(sequence.homographies[i], [centres[0]])[0] - centre) < 0.2, f'frame {i}'
        assert np.linalg.norm(project(sequence.homography(i, 0), [centre])[0] - centres[0]) < 0.2, f'frame {i}'


def test_stored_frames_agree_with_the_homographies(sequence):
    """Each stored frame warped back into frame 0 reproduces frame 0 where they overlap; a
    homography 2 px off does not (negative control)."""
    frame0 = sequence.image(0).astype(np.float32)
    shift = np.array([[1, 0, 2], [0, 1, 0], [0, 0, 1]], float)
    for i in (1, FRAMES // 2, FRAMES - 1):
        H = sequence.homography(0, i)  # frame 0 pixels -> frame i pixels
        back = cv2.warpPerspective(sequence.image(i), H, SIZE, flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
        valid = cv2.warpPerspective(np.full(SIZE[::-1], 255, np.uint8), H, SIZE,
                                    flags=cv2.WARP_INVERSE_MAP | cv2.INTER_NEAREST)
        valid = cv2.erode(valid, np.ones((5, 5), np.uint8)) > 0
        assert valid.mean() > 0.5, f'frame {i} should overlap frame 0'
        error = np.abs(back.astype(np.float32) - frame0)[valid].mean()
        off = cv2.warpPerspective(sequence.image(i), shift @ H, SIZE, flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
        error_off = np.abs(off.astype(np.float32) - frame0)[valid].mean()
        assert error < 6 and error_off > 3 * error, f'frame {i}: error {error:.1f}, 2 px off {error_off:.1f}'


def test_homographies_follow_from_camera_info_and_poses(sequence):
    """H(0 -> i) = K [r1 r2 t]_i ([r1 r2 t]_0)^-1 K^-1 for the plane Z = 0, with K from camera_info."""
    info = sequence.camera_info
    K = np.array(info['k']).reshape(3, 3)
    assert (info['width'], info['height']) == SIZE
    assert K[0, 2] == (SIZE[0] - 1) / 2 and K[1, 2] == (SIZE[1] - 1) / 2 and K[0, 0] == K[1, 1] > 0
    np.testing.assert_allclose(np.array(info['p']).reshape(3, 4), np.column_stack([K, np.zeros(3)]))
    assert info['distortion_model'] == 'plumb_bob' and not any(info['d'])

    def plane_to_pixels(R, C):
        return K @ np.column_stack([R[:, 0], R[:, 1], -R @ C])

    base = np.linalg.inv(plane_to_pixels(sequence.rotations[0], sequence.positions[0]))
    for i in range(FRAMES):
        R = sequence.rotations[i]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        expected = plane_to_pixels(R, sequence.positions[i]) @ base
        np.testing.assert_allclose(sequence.homographies[i], expected / expected[2, 2], rtol=1e-9, atol=1e-9)


def test_homographies_between_any_two_frames_compose(sequence):
    np.testing.assert_allclose(sequence.homographies[0], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(sequence.homography(4, 4), np.eye(3), atol=1e-12)
    chained = sequence.homography(7, 2) @ sequence.homography(2, 7)
    np.testing.assert_allclose(chained / chained[2, 2], np.eye(3), atol=1e-9)
    via = sequence.homography(3, 5) @ sequence.homography(1, 3)
    np.testing.assert_allclose(via / via[2, 2], sequence.homography(1, 5), atol=1e-9)


def test_stamps_files_and_json(sequence):
    description = json.loads((sequence.directory / SEQUENCE_FILE).read_text())
    assert description['width'] == SIZE[0] and description['rate_hz'] == 10.0 and description['seed'] == SEED
    assert [f.name for f in sequence.files] == [f'{i:06d}.png' for i in range(FRAMES)]
    assert np.diff(sequence.stamps) == pytest.approx([0.1] * (FRAMES - 1), abs=1e-6)  # float64 at 1.7e9 s
    image = cv2.imread(str(sequence.files[0]), cv2.IMREAD_UNCHANGED)
    assert image.shape == (SIZE[1], SIZE[0], 3) and image.dtype == np.uint8


def test_texture_gives_corners_everywhere(sequence):
    for i in (0, FRAMES - 1):
        grey = cv2.cvtColor(sequence.image(i), cv2.COLOR_BGR2GRAY)
        corners = cv2.goodFeaturesToTrack(grey, 5000, 0.01, 4).reshape(-1, 2)
        assert len(corners) > 800, f'frame {i}: {len(corners)} corners'
        cells = np.histogram2d(corners[:, 0], corners[:, 1], bins=(4, 3), range=[[0, SIZE[0]], [0, SIZE[1]]])[0]
        assert cells.min() >= 20, f'frame {i}: corners per image cell {cells.T.tolist()}'


def test_deterministic_and_seeded(tmp_path):
    a = generate_sequence(tmp_path / 'a', num_frames=3, size=(160, 120), seed=1)
    b = generate_sequence(tmp_path / 'b', num_frames=3, size=(160, 120), seed=1)
    c = generate_sequence(tmp_path / 'c', num_frames=3, size=(160, 120), seed=2)
    for i in range(3):
        np.testing.assert_array_equal(a.image(i), b.image(i))
    np.testing.assert_array_equal(a.homographies, b.homographies)
    assert not np.array_equal(a.image(1), c.image(1)) and not np.allclose(a.homographies, c.homographies)
    # regenerating into a used directory leaves exactly the new sequence
    d = generate_sequence(tmp_path / 'a', num_frames=2, size=(160, 120), seed=1)
    assert sorted(p.name for p in (tmp_path / 'a').glob('*.png')) == ['000000.png', '000001.png'] and len(d) == 2


def test_bad_arguments_and_unreadable_sequences(tmp_path):
    with pytest.raises(ValueError, match='num_frames must be at least 2'):
        generate_sequence(tmp_path, num_frames=1)
    with pytest.raises(ValueError, match='at least 64x64'):
        generate_sequence(tmp_path, size=(32, 480))
    with pytest.raises(ValueError, match='rate_hz must be > 0'):
        generate_sequence(tmp_path, rate_hz=0)
    with pytest.raises(ValueError, match='not a readable synthetic sequence.*python -m superglue_ros.demo.synthetic'):
        load_sequence(tmp_path / 'missing')
    generate_sequence(tmp_path / 'seq', num_frames=2, size=(96, 64))
    (tmp_path / 'seq' / '000001.png').unlink()
    with pytest.raises(ValueError, match='frames that do not exist'):
        load_sequence(tmp_path / 'seq')


def test_command_line(tmp_path, capsys):
    assert synthetic.main([str(tmp_path), '--frames', '2', '--size', '96', '64', '--rate', '4']) == 0
    assert 'wrote 2 frames' in capsys.readouterr().out
    assert load_sequence(tmp_path).rate_hz == 4.0


def test_panel_sequence_gives_the_true_relative_pose(tmp_path):
    """Issue 15: with the panel, Sequence.relative_pose(i, j) is T_i_j of pose.py: world points on both planes,
    projected into frames i and j with the sequence's K and poses, give back that pose through the essential
    matrix (direction) and through PnP with frame i's depths (metres); the frames show the panel."""
    from superglue_ros.geometry import Calibration, Verification
    from superglue_ros.pipeline import verify
    from superglue_ros.pose import direction_error_deg, rotation_error_deg
    from superglue_ros.tracking import Correspondences

    sequence = generate_sequence(tmp_path, num_frames=8, size=(320, 240), seed=2, panel=True)
    assert not np.array_equal(sequence.image(0), generate_sequence(tmp_path / 'flat', 8, (320, 240), 2).image(0))
    K = np.array(sequence.camera_info['k']).reshape(3, 3)
    corners = np.array(json.loads((tmp_path / SEQUENCE_FILE).read_text())['panel']['corners'])
    rng = np.random.default_rng(0)
    panel = np.column_stack([rng.uniform(*corners[[0, 2], 0], 100), rng.uniform(*corners[[0, 2], 1], 100),
                             np.full(100, corners[0, 2])])
    background = np.column_stack([rng.uniform(-1.2, 1.2, (100, 2)), np.zeros(100)])
    world = np.concatenate([panel, background])
    i, j = 0, 7

    def in_camera(k):
        return (world - sequence.positions[k]) @ sequence.rotations[k].T   # optical frame of frame k, m

    pixels = [(p @ K.T)[:, :2] / p[:, 2:] for p in (in_camera(i), in_camera(j))]
    c = Correspondences(pixels[0].astype(np.float32), pixels[1].astype(np.float32), np.ones(200, np.float32),
                        np.arange(200, dtype=np.int32), np.arange(200, dtype=np.int32))
    calibration = Calibration(K.ravel())
    rotation, translation = sequence.relative_pose(i, j)
    essential = verify(c, Verification('essential', threshold_px=0.5), calibration, calibration).pose
    assert essential.source == 'essential'
    assert rotation_error_deg(essential.rotation, rotation) < 0.05
    assert direction_error_deg(essential.translation, translation) < 0.5
    metric = verify(c, Verification('essential', threshold_px=0.5), calibration, calibration,
                    in_camera(i)[:, 2].astype(np.float32)).pose
    assert metric.source == 'pnp' and np.linalg.norm(metric.translation - translation) < 1e-3


def test_the_revisit_path_comes_back_over_its_start(tmp_path):
    """The camera circles away from its start, over other places, and back: the overlap (ground truth of
    loop closure) of the last frames with the first is large, of the frames half way round none."""
    revisit = generate_sequence(tmp_path, num_frames=40, size=(320, 240), path='revisit')
    assert json.loads((tmp_path / SEQUENCE_FILE).read_text())['path'] == 'revisit'
    assert revisit.overlap(0, 0) == pytest.approx(1.0)
    assert revisit.overlap(0, 1) > 0.5                       # neighbours overlap
    assert max(revisit.overlap(0, j) for j in range(10, 19)) == 0.0   # half way round: another place
    assert max(revisit.overlap(j, 0) for j in range(26, 32)) > 0.7    # a lap later: back over the start
    with pytest.raises(ValueError, match='path must be one of smooth, revisit'):
        generate_sequence(tmp_path, num_frames=4, path='spiral')
