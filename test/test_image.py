"""Image validation, grey conversion, INTER_AREA resize and coordinate mapping (superglue_ros.image).

The device half of the grey conversion (grey_tensor, what the Matcher runs on the uploaded camera bytes)
is compared bit for bit with cv2.cvtColor followed by the host float scale, exhaustively over every 8-bit
colour and on random and extreme 16-bit colours, on the CPU and on CUDA when present. The pixel-centre
mapping after a resize is checked on images whose pixels are replicated 2x2 and 4x4: processed at the
original size they give exactly the original's keypoints, each at ((x + 0.5) * s - 0.5, (y + 0.5) * s - 0.5).
"""
import cv2
import numpy as np
import pytest
import torch

from model_fixtures import confident_weights
from superglue_ros.image import (ImageError, grey_tensor, prepare_image, to_bgr8, to_grayscale_float, to_original,
                                 to_upload)
from superglue_ros.matcher import Matcher
from superglue_ros.models import SuperGlue, SuperPoint

DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason='needs a CUDA device'))]


@pytest.fixture(scope='module')
def frame(freiburg_paths):
    """A real 480x640 BGR uint8 frame."""
    return cv2.imread(str(freiburg_paths[0]), cv2.IMREAD_COLOR)


@pytest.fixture(scope='module')
def bgra(frame):
    alpha = np.random.default_rng(0).integers(0, 256, frame.shape[:2], dtype=np.uint8)
    return np.dstack([frame, alpha])


def test_grey_input_is_only_scaled(frame):
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    expected = grey.astype(np.float32) / 255
    for image in (grey, grey[:, :, None]):
        out = to_grayscale_float(image)
        assert out.shape == (480, 640) and out.dtype == np.float32
        np.testing.assert_allclose(out, expected, atol=1e-7)


@pytest.mark.parametrize('code, order, channels', [
    (cv2.COLOR_BGR2GRAY, 'bgr', 3), (cv2.COLOR_RGB2GRAY, 'rgb', 3),
    (cv2.COLOR_BGRA2GRAY, 'bgr', 4), (cv2.COLOR_RGBA2GRAY, 'rgb', 4)])
def test_colour_conversion_matches_opencv(bgra, code, order, channels):
    image = np.ascontiguousarray(bgra[:, :, :channels])
    expected = cv2.cvtColor(image, code).astype(np.float32) / 255
    np.testing.assert_allclose(to_grayscale_float(image, order), expected, atol=1e-7)


def test_rgb_order_of_flipped_channels_equals_bgr(frame):
    rgb_view = frame[:, :, ::-1]  # negative-stride view
    np.testing.assert_array_equal(to_grayscale_float(rgb_view, 'rgb'), to_grayscale_float(frame))
    assert not np.array_equal(to_grayscale_float(rgb_view, 'bgr'), to_grayscale_float(frame))


def test_uint16_and_float_inputs(frame):
    frame16 = frame.astype(np.uint16) * 257  # same picture at 16 bits
    expected16 = cv2.cvtColor(frame16, cv2.COLOR_BGR2GRAY).astype(np.float32) / 65535
    np.testing.assert_allclose(to_grayscale_float(frame16), expected16, atol=1e-7)

    frame32 = frame.astype(np.float32) / 255
    expected32 = cv2.cvtColor(frame32, cv2.COLOR_BGR2GRAY)
    np.testing.assert_allclose(to_grayscale_float(frame32), expected32, atol=1e-6)
    np.testing.assert_allclose(to_grayscale_float(frame32.astype(np.float64)), expected32, atol=1e-6)
    # all encodings of the same picture agree to within the uint8 rounding
    np.testing.assert_allclose(to_grayscale_float(frame16), to_grayscale_float(frame), atol=1 / 255)
    np.testing.assert_allclose(to_grayscale_float(frame32), to_grayscale_float(frame), atol=1 / 255)


@pytest.mark.parametrize('view', [
    lambda a: a[::2, ::3],            # strided
    lambda a: a[::-1, ::-1],          # negative strides
    lambda a: a.transpose(1, 0, 2),   # transposed
    lambda a: a[10:-10, 20:-20],      # crop
])
def test_non_contiguous_views(frame, view):
    image = view(frame)
    assert not image.flags.c_contiguous
    np.testing.assert_array_equal(to_grayscale_float(image), to_grayscale_float(image.copy()))
    grey, _ = prepare_image(image, (64, 48))
    np.testing.assert_array_equal(grey, prepare_image(image.copy(), (64, 48))[0])


def test_resize_inter_area_and_scale(frame):
    grey, scale = prepare_image(frame, (320, 240))
    expected = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (320, 240),
                          interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    assert grey.shape == (240, 320) and grey.dtype == np.float32
    np.testing.assert_allclose(grey, expected, atol=1e-7)
    assert scale == (2.0, 2.0)

    grey, scale = prepare_image(frame, (500, 300))
    assert grey.shape == (300, 500) and scale == (640 / 500, 480 / 300)
    # pixel centres map back inside the same place of the input: the first and last processed pixels
    # land inside the first and last input pixels, [-0.5, 0.5] and [638.5, 639.5] x [478.5, 479.5]
    corners = to_original(np.array([[0, 0], [499, 299]], np.float32), scale)
    np.testing.assert_allclose(corners, [[0.14, 0.3], [638.86, 478.7]], rtol=1e-5)

    grey, scale = prepare_image(frame, None)
    assert grey.shape == (480, 640) and scale == (1.0, 1.0)
    np.testing.assert_array_equal(grey, to_grayscale_float(frame))


@pytest.mark.parametrize('resize', [(0, 240), (320,), (320.0, 240), (8, 8), 'big', (-1, 240)])
def test_bad_resize(frame, resize):
    with pytest.raises(ValueError, match='resize must be'):
        prepare_image(frame, resize)


ok = np.zeros((32, 32, 3), np.uint8)


@pytest.mark.parametrize('image, received', [
    (None, 'NoneType'),
    ([[0] * 32] * 32, 'list'),
    (np.zeros((0, 0), np.uint8), '(0, 0)'),
    (np.zeros((15, 64), np.uint8), 'too small'),
    (np.zeros((64, 15, 3), np.uint8), 'too small'),
    (np.zeros((1, 32, 32, 3), np.uint8), '(1, 32, 32, 3)'),
    (np.zeros((32,), np.uint8), '(32,)'),
    (np.zeros((32, 32, 2), np.uint8), '(32, 32, 2)'),
    (np.zeros((32, 32, 5), np.uint8), '(32, 32, 5)'),
    (ok.astype(bool), 'bool'),
    (ok.astype(np.complex64), 'complex64'),
    (ok.astype(np.int64), 'int64'),
    (ok.astype(np.int8), 'int8'),
    (ok.astype(np.float16), 'float16'),
    (np.full((32, 32), np.nan, np.float32), 'NaN'),
    (np.full((32, 32), np.inf, np.float64), 'NaN or inf'),
    (np.full((32, 32), 255.0, np.float32), '[255, 255]'),
    (np.full((32, 32), -0.5, np.float64), '[-0.5, -0.5]'),
])
def test_bad_images_raise_image_error(image, received):
    with pytest.raises(ImageError) as info:
        to_grayscale_float(image)
    message = str(info.value)
    assert received in message  # what was received
    assert 'expected' in message or 'must be' in message  # and what is accepted
    with pytest.raises(ImageError):
        prepare_image(image, (32, 32))


def test_bad_color_order(frame):
    with pytest.raises(ValueError, match='color_order'):
        to_grayscale_float(frame, 'hsv')


def test_to_bgr8():
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    out = to_bgr8(grey)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert (out == grey[:, :, None]).all()
    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    np.testing.assert_array_equal(to_bgr8(rgba, 'rgb'), rgba[:, :, 2::-1])
    np.testing.assert_array_equal(to_bgr8(rgba[:, :, :3].astype(np.uint16) * 257), rgba[:, :, :3])
    np.testing.assert_array_equal(to_bgr8(rgba[:, :, :3] / 255.0), rgba[:, :, :3])


# -- the device grey conversion, bit for bit against OpenCV ---------------------------------------

# (ROS encoding, channels, channel order) of every encoding the node accepts
ENCODINGS = [('mono8', 1, 'bgr'), ('bgr8', 3, 'bgr'), ('rgb8', 3, 'rgb'), ('bgra8', 4, 'bgr'), ('rgba8', 4, 'rgb'),
             ('mono16', 1, 'bgr'), ('bgr16', 3, 'bgr'), ('rgb16', 3, 'rgb'), ('bgra16', 4, 'bgr'),
             ('rgba16', 4, 'rgb')]
CVT_CODES = {(3, 'bgr'): cv2.COLOR_BGR2GRAY, (3, 'rgb'): cv2.COLOR_RGB2GRAY,
             (4, 'bgr'): cv2.COLOR_BGRA2GRAY, (4, 'rgb'): cv2.COLOR_RGBA2GRAY}


def opencv_grey(image: np.ndarray, order: str) -> tuple[np.ndarray, np.ndarray]:
    """The host reference: (cv2.cvtColor grey in the image's dtype, that grey in [0, 1] as the original
    release's frame2tensor makes it: frame / 255. (here / 65535. for 16 bits), then float32)."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, CVT_CODES[image.shape[2], order])
    return grey, (grey / (255. if image.dtype == np.uint8 else 65535.)).astype(np.float32)


def device_grey(image: np.ndarray, order: str, device: str) -> np.ndarray:
    """The Matcher's path without a resize: to_upload (host), then grey_tensor on `device`."""
    upload = to_upload(image, None, order)
    assert upload.array.dtype == image.dtype and upload.array.shape == image.shape, 'the host converted pixels'
    return grey_tensor(torch.from_numpy(upload.channels_last).to(device), upload.color_order).cpu().numpy()


def every_colour(channels: int, bits: int, rng) -> np.ndarray:
    """Test colours as an image [H, W, channels] (or [H, W] for one channel).
    8 bits: every value / every 24-bit colour once (2^24 pixels). 16 bits: every grey value, every grey as a
    colour, all combinations of extreme channel values, and 2^20 random colours. A fourth channel (alpha) is random."""
    top = 2 ** bits - 1
    if channels == 1:
        return np.arange(top + 1, dtype=np.uint32).reshape(-1, 256 if bits == 16 else 16).astype(f'uint{bits}')
    if bits == 8:
        colours = np.empty((256, 256, 256, 3), np.uint32)
        for channel in range(3):
            colours[..., channel] = np.arange(256).reshape([256 if c == 2 - channel else 1 for c in range(3)])
        colours = colours.reshape(-1, 3)
    else:
        extremes = np.array([0, 1, 2, 255, 256, 32767, 32768, 65533, 65534, 65535], np.uint32)
        corners = np.stack(np.meshgrid(extremes, extremes, extremes), -1).reshape(-1, 3)
        greys = np.repeat(np.arange(top + 1, dtype=np.uint32)[:, None], 3, axis=1)
        random = rng.integers(0, top + 1, (2 ** 20, 3), dtype=np.uint32)
        colours = np.concatenate([corners, greys, random, np.zeros((24, 3), np.uint32)])  # rows of 1024
    if channels == 4:
        colours = np.concatenate([colours, rng.integers(0, top + 1, (len(colours), 1), dtype=np.uint32)], 1)
    return colours.astype(f'uint{bits}').reshape(-1, 1024, channels)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('encoding, channels, order', ENCODINGS, ids=[e[0] for e in ENCODINGS])
def test_device_grey_is_bit_identical_to_opencv(encoding, channels, order, device):
    bits = 16 if encoding.endswith('16') else 8
    image = every_colour(channels, bits, np.random.default_rng(7))
    for rows in np.array_split(np.arange(len(image)), max(1, image.size // 2 ** 24)):  # bounded memory
        part = image[rows[0]:rows[-1] + 1]
        grey, expected = opencv_grey(part, order)
        out = device_grey(part, order, device)
        assert out.dtype == np.float32 and out.shape == grey.shape
        # equal floats: equal integer greys too (the scale is strictly increasing)
        np.testing.assert_array_equal(out, expected, err_msg=f'{encoding} on {device}: not bit-identical')


def test_device_grey_of_real_frames(frame, bgra):
    """A real frame in every 8- and 16-bit encoding: the Matcher's device path equals the host reference."""
    rgba = bgra[:, :, [2, 1, 0, 3]]
    images = {'bgr': frame, 'rgb': frame[:, :, ::-1], 'bgra': bgra, 'rgba': rgba}
    for name, image in images.items():
        order = name[:3]
        for data in (np.ascontiguousarray(image), image.astype(np.uint16) * 257 + 3):
            np.testing.assert_array_equal(device_grey(data, order, 'cpu'), opencv_grey(data, order)[1])
            np.testing.assert_array_equal(prepare_image(data, None, order)[0], opencv_grey(data, order)[1])


# -- pixel-centre coordinates after a resize --------------------------------------------------------

def test_to_original_maps_pixel_centres():
    points = np.array([[412, 202], [0, 0], [-0.5, -0.5], [10.25, 3.75]], np.float32)
    np.testing.assert_array_equal(to_original(points, (2.0, 2.0)),
                                  [[824.5, 404.5], [0.5, 0.5], [-0.5, -0.5], [21.0, 8.0]])
    # the pixel edge (-0.5) stays the edge; unequal scales act per axis
    np.testing.assert_array_equal(to_original(points[:2], (4.0, 2.0)), [[1649.5, 404.5], [1.5, 0.5]])
    identity = to_original(points, (1.0, 1.0))
    assert identity.dtype == np.float32 and np.array_equal(identity, points)
    assert to_original(np.zeros((0, 2)), (2.0, 2.0)).shape == (0, 2)


@pytest.fixture(scope='module')
def extractor():
    """A Matcher whose released-size SuperPoint has confident random weights, processing at 640x480
    (the SuperGlue is not used)."""
    superpoint = SuperPoint()
    superpoint.load_state_dict(confident_weights(seed=0)[0])
    return Matcher(superpoint, SuperGlue({'gnn_layers': ['self', 'cross']}), device='cpu', resize=(640, 480))


@pytest.mark.parametrize('factor', [2, 4])
def test_replicated_pixels_give_the_original_keypoints_at_pixel_centres(extractor, frame, factor):
    """Every pixel of a real frame replicated factor x factor, processed at the frame's size: INTER_AREA gives
    back the frame exactly, so SuperPoint finds exactly the frame's keypoints, and each maps to the centre of
    its pixel's factor x factor block: ((x + 0.5) * factor - 0.5, (y + 0.5) * factor - 0.5)."""
    original = extractor.extract(frame)
    big = np.repeat(np.repeat(frame, factor, axis=0), factor, axis=1)
    features = extractor.extract(big)
    assert features.image_size == (640, 480) and features.scale == (factor, factor)
    assert len(original.scores) > 100
    assert torch.equal(features.keypoints, original.keypoints)
    assert torch.equal(features.scores, original.scores) and torch.equal(features.descriptors, original.descriptors)
    keypoints = original.keypoints.numpy()
    assert np.array_equal(original.keypoints_original(), keypoints)  # no resize: as detected
    mapped = features.keypoints_original()
    np.testing.assert_array_equal(mapped, (keypoints + 0.5) * factor - 0.5)
    # the mapped point is the centre of the block that replicates the keypoint's pixel
    first = mapped - (factor - 1) / 2
    np.testing.assert_array_equal(first, keypoints * factor)
    x, y = keypoints[0].astype(int)
    bx, by = first[0].astype(int)
    assert (big[by:by + factor, bx:bx + factor] == frame[y, x]).all()
