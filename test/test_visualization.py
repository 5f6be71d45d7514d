"""Side-by-side match picture: layout, confidence colours, edge cases."""
import cv2
import numpy as np
import pytest

from superglue_ros.visualization import MARGIN, confidence_colors, draw_matches


def test_colormap_red_to_green():
    colors = confidence_colors([0.0, 0.5, 1.0]).astype(int)  # BGR
    np.testing.assert_array_equal(colors, [[0, 0, 255], [0, 255, 255], [0, 255, 0]])
    assert confidence_colors([-1, 2]).tolist() == [[0, 0, 255], [0, 255, 0]]  # clipped


def line_pixel(confidence):
    """BGR of the middle of a horizontal match line crossing the margin, on black images."""
    black = np.zeros((100, 100), np.uint8)
    out = draw_matches(black, black, [[90, 70]], [[10, 70]], [0], [confidence])
    middle_x = (90 + 100 + MARGIN + 10) // 2  # inside the white margin: 100 <= x < 110
    return out[70, middle_x].astype(int)


def test_line_colour_follows_confidence():
    blue, green, red = line_pixel(0.95)
    assert green > 200 and red < 60 and blue < 30
    blue, green, red = line_pixel(0.05)
    assert red > 200 and green < 60 and blue < 30


def test_layout_with_mismatched_sizes_and_grey(freiburg_paths):
    colour = cv2.imread(str(freiburg_paths[0]), cv2.IMREAD_COLOR)  # 480x640x3
    grey = cv2.resize(cv2.imread(str(freiburg_paths[1]), cv2.IMREAD_GRAYSCALE), (320, 240))
    rng = np.random.default_rng(0)
    keypoints0 = rng.uniform([0, 0], [639, 479], (50, 2))
    keypoints1 = rng.uniform([0, 0], [319, 239], (40, 2))
    matches0 = np.full(50, -1)
    matches0[:30] = rng.permutation(40)[:30]
    scores0 = np.where(matches0 > -1, rng.uniform(0, 1, 50), 0).astype(np.float32)

    out = draw_matches(colour, grey, keypoints0, keypoints1, matches0, scores0, text_lines=['SuperGlue'])
    assert out.shape == (480, 640 + MARGIN + 320, 3) and out.dtype == np.uint8
    # below the smaller image and in the margin: background white, except where lines cross
    assert (out[300:, 640 + MARGIN:] == 255).mean() > 0.5
    # swapped order (grey first, taller second image); without drawing, the images are copied as is
    empty = np.zeros((0, 2))
    out = draw_matches(grey, colour, empty, empty, [], [])
    assert out.shape == (480, 320 + MARGIN + 640, 3)
    np.testing.assert_array_equal(out[:, 320 + MARGIN:], colour)
    np.testing.assert_array_equal(out[100:240, :320], cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)[100:])
    assert (out[240:, :320] == 255).all()


def test_text_is_written():
    image = np.full((480, 640), 128, np.uint8)
    empty = np.zeros((0, 2))
    plain = draw_matches(image, image, empty, empty, [], [])
    with_text = draw_matches(image, image, empty, empty, [], [], text_lines=['extra line'])
    assert (plain[:40, :200] == 255).any()  # the counts, in white
    changed = np.any(plain != with_text, axis=2)
    rows = np.flatnonzero(changed.any(axis=1))
    assert rows.size and rows.min() > 40 and rows.max() < 160  # the extra line, under the counts


def test_zero_matches_and_zero_keypoints():
    image = np.zeros((64, 64, 3), np.uint8)
    out = draw_matches(image, image, np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0, int), np.zeros(0))
    assert out.shape == (64, 128 + MARGIN, 3)
    keypoints = [[10, 10], [40, 40]]
    out = draw_matches(image, image, keypoints, keypoints, [-1, -1], [0, 0])
    assert out[40, 40].any() and out[40, 64 + MARGIN + 40].any()  # keypoints drawn


@pytest.mark.parametrize('matches0, scores0, message', [
    ([0], [0.5, 0.5], 'one entry per keypoint'),
    ([0, 5], [0.5, 0.5], 'only 2'),
])
def test_inconsistent_inputs(matches0, scores0, message):
    image = np.zeros((32, 32), np.uint8)
    with pytest.raises(ValueError, match=message):
        draw_matches(image, image, [[1, 1], [2, 2]], [[1, 1], [2, 2]], matches0, scores0)
    with pytest.raises(ValueError, match=r'\[N, 2\]'):
        draw_matches(image, image, [1, 2, 3], [[1, 1]], [0], [0.5])
