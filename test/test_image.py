"""Image validation, grey conversion (compared with cv2.cvtColor) and INTER_AREA resize."""
import cv2
import numpy as np
import pytest

from superglue_ros.image import ImageError, prepare_image, to_bgr8, to_grayscale_float


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
    # a processed pixel maps back onto the same place of the input
    assert (499 * scale[0], 299 * scale[1]) == pytest.approx((638.72, 478.4))

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
