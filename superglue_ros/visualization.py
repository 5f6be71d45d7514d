"""Side-by-side match picture: the CLI's --image, the node's ~/match_image and the demo.

Layout as in the original SuperGlue demo: image0 | white margin | image1, every keypoint as a
small dot, each match as a line coloured by its confidence, counts and caller text top-left
(white on a darkened box).
Colour map (confidence_colors): red (0) -> yellow (0.5) -> green (1), so good matches read green.
"""
import cv2
import numpy as np

from .image import to_bgr8

MARGIN = 10  # white pixels between the two images


def confidence_colors(confidence) -> np.ndarray:
    """[K] confidence in [0, 1] -> [K, 3] uint8 BGR on the red -> yellow -> green ramp."""
    c = np.clip(np.asarray(confidence, np.float32).reshape(-1), 0, 1)
    red, green = np.clip(2 * (1 - c), 0, 1), np.clip(2 * c, 0, 1)
    return np.round(np.stack([np.zeros_like(c), green, red], axis=-1) * 255).astype(np.uint8)


def _points(keypoints, name: str) -> np.ndarray:
    points = np.asarray(keypoints, dtype=np.float64)
    if points.size == 0:
        return np.zeros((0, 2), np.int32)
    if points.ndim != 2 or points.shape[1] != 2 or not np.isfinite(points).all():
        raise ValueError(f'{name} must be finite (x, y) pixels of shape [N, 2], got shape {points.shape}')
    return np.round(points).astype(np.int32)


def _put_text(canvas: np.ndarray, lines) -> None:
    """White text on a darkened box, top-left, scaled with the picture height."""
    lines = [str(line) for line in lines]
    font, scale = cv2.FONT_HERSHEY_DUPLEX, float(np.clip(canvas.shape[0] / 600, 0.45, 2.0))
    thickness = max(1, round(scale))
    sizes = [cv2.getTextSize(line, font, scale, thickness)[0] for line in lines]
    line_height = int(cv2.getTextSize('Ag', font, scale, thickness)[0][1] * 1.8)
    pad = int(6 * scale)
    width = min(max(w for w, _ in sizes) + 2 * pad, canvas.shape[1])
    height = min(line_height * len(lines) + 2 * pad, canvas.shape[0])
    canvas[:height, :width] //= 3  # darken, so white text reads on any image
    for i, line in enumerate(lines):
        origin = (pad, pad + int((i + 0.75) * line_height))
        cv2.putText(canvas, line, origin, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def draw_matches(image0, image1, keypoints0, keypoints1, matches0, matching_scores0, text_lines=(),
                 color_order: str = 'bgr') -> np.ndarray:
    """Draw the matches of image0 -> image1; returns bgr8 [max(H0, H1), W0 + MARGIN + W1, 3].

    image0/1: any image image.py accepts (grey or colour, sizes may differ), colour in color_order.
    keypoints0 [N0, 2], keypoints1 [N1, 2]: (x, y) pixels of the images passed in.
    matches0 [N0]: index into keypoints1, -1 = unmatched; matching_scores0 [N0]: confidence in [0, 1].
    text_lines: extra lines written under the keypoint and match counts.
    """
    bgr0, bgr1 = to_bgr8(image0, color_order), to_bgr8(image1, color_order)
    (h0, w0), (h1, w1) = bgr0.shape[:2], bgr1.shape[:2]
    canvas = np.full((max(h0, h1), w0 + MARGIN + w1, 3), 255, np.uint8)
    canvas[:h0, :w0] = bgr0
    canvas[:h1, w0 + MARGIN:] = bgr1

    points0 = _points(keypoints0, 'keypoints0')
    points1 = _points(keypoints1, 'keypoints1') + np.array([w0 + MARGIN, 0], np.int32)
    matches0 = np.asarray(matches0).reshape(-1)
    scores0 = np.asarray(matching_scores0, np.float32).reshape(-1)
    if len(matches0) != len(points0) or len(scores0) != len(points0):
        raise ValueError(f'matches0 ({len(matches0)}) and matching_scores0 ({len(scores0)}) need one '
                         f'entry per keypoint of image0 ({len(points0)})')
    matched = matches0 > -1
    if matched.any() and matches0[matched].max() >= len(points1):
        raise ValueError(f'matches0 indexes keypoint {matches0[matched].max()} of image1, '
                         f'which has only {len(points1)}')

    for x, y in np.concatenate([points0, points1]):  # all keypoints, under the match lines
        cv2.circle(canvas, (int(x), int(y)), 2, (0, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(canvas, (int(x), int(y)), 1, (255, 255, 255), -1, cv2.LINE_AA)

    idx0 = np.flatnonzero(matched)
    order = np.argsort(scores0[idx0], kind='stable')  # most confident drawn last, on top
    idx0 = idx0[order]
    for i, color in zip(idx0, confidence_colors(scores0[idx0])):
        color = tuple(int(c) for c in color)
        p0, p1 = tuple(int(v) for v in points0[i]), tuple(int(v) for v in points1[matches0[i]])
        cv2.line(canvas, p0, p1, color, 1, cv2.LINE_AA)
        cv2.circle(canvas, p0, 2, color, -1, cv2.LINE_AA)
        cv2.circle(canvas, p1, 2, color, -1, cv2.LINE_AA)

    _put_text(canvas, [f'Keypoints: {len(points0)}:{len(points1)}', f'Matches: {len(idx0)}',
                       *text_lines])
    return canvas
