"""sensor_msgs/Image and CompressedImage <-> numpy (superglue_ros.ros.image_conversion).

One table of cases runs against the numpy backend always and against ROS 2's cv_bridge when it is
importable: both must give the same arrays and refuse the same messages with the same errors.
YUV 4:2:2 and Bayer: read as grey with cv_bridge's conversion codes, checked against its table and
against mosaics / YUV frames built here from colour images.
Compressed images: JPEG and PNG with the format strings of image_transport's compressed plugin.
"""
import array
import struct
import sys
import zlib

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from superglue_ros.image import ImageError, to_grayscale_float
from superglue_ros.ros.diagnostics import rejection_kind
from superglue_ros.ros.image_conversion import (CV_BRIDGE_AVAILABLE, ENCODINGS, GREY_CONVERSIONS,
                                                ImageConversionError, compressed_msg_to_numpy, image_msg_to_numpy,
                                                numpy_to_compressed_msg, numpy_to_image_msg)

BACKENDS = ['numpy', pytest.param('cv_bridge', marks=pytest.mark.skipif(
    not CV_BRIDGE_AVAILABLE, reason="ROS 2's cv_bridge is not importable here"))]
LITTLE = sys.byteorder == 'little'


def random_image(encoding: str, height: int = 5, width: int = 7) -> np.ndarray:
    dtype, channels, _ = ENCODINGS[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(0).integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


def message(encoding: str, rows: np.ndarray, step: int, width: int, height: int, big_endian: bool = False) -> Image:
    """An Image message with rows [height, step] uint8 as its data, built field by field."""
    return Image(encoding=encoding, width=width, height=height, step=step, is_bigendian=int(big_endian),
                 data=array.array('B', np.ascontiguousarray(rows, np.uint8).tobytes()))


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('encoding', list(ENCODINGS))
def test_round_trip(encoding, backend):
    image = random_image(encoding)
    dtype, channels, color_order = ENCODINGS[encoding]
    header = Header(frame_id='camera')
    header.stamp.sec = 7
    msg = numpy_to_image_msg(image, encoding, header=header, backend=backend)
    assert (msg.encoding, msg.width, msg.height) == (encoding, 7, 5)
    assert msg.step == 7 * channels * np.dtype(dtype).itemsize
    assert len(msg.data) == msg.step * msg.height
    assert bool(msg.is_bigendian) == (sys.byteorder == 'big')
    assert (msg.header.frame_id, msg.header.stamp.sec) == ('camera', 7)
    assert bytes(msg.data) == image.tobytes()
    for reader in ('numpy', backend):
        back, order = image_msg_to_numpy(msg, backend=reader)
        assert order == color_order
        assert back.dtype == np.dtype(dtype) and back.shape == image.shape
        np.testing.assert_array_equal(back, image)


@pytest.mark.parametrize('backend', BACKENDS)
def test_colour_order_reaches_grey_conversion(backend):
    """rgb8 and bgr8 messages of the same scene give the same grey image."""
    bgr = random_image('bgr8', 20, 24)
    grey = [to_grayscale_float(*image_msg_to_numpy(numpy_to_image_msg(image, encoding), backend=backend))
            for image, encoding in ((bgr, 'bgr8'), (bgr[:, :, ::-1], 'rgb8'))]
    np.testing.assert_array_equal(grey[0], grey[1])


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('encoding', ['mono8', 'mono16', 'bgr8', 'rgba8', 'rgb16'])
def test_step_with_row_padding(encoding, backend):
    image = random_image(encoding)
    row = image.reshape(5, -1).view(np.uint8)
    padding = 6  # a multiple of 2, so 16-bit rows stay aligned to their component
    rows = np.full((5, row.shape[1] + padding), 0xAB, np.uint8)
    rows[:, :row.shape[1]] = row
    msg = message(encoding, rows, step=rows.shape[1], width=7, height=5, big_endian=not LITTLE)
    back, _ = image_msg_to_numpy(msg, backend=backend)
    np.testing.assert_array_equal(back, image)


def test_numpy_backend_is_zero_copy():
    image = random_image('bgr8')
    rows = np.zeros((5, 7 * 3 + 4), np.uint8)
    rows[:, :21] = image.reshape(5, 21)
    for msg in (numpy_to_image_msg(image, 'bgr8', backend='numpy'), message('bgr8', rows, 25, 7, 5)):
        back, _ = image_msg_to_numpy(msg, backend='numpy')
        assert np.shares_memory(back, np.frombuffer(msg.data, np.uint8))
        np.testing.assert_array_equal(back, image)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('big_endian', [True, False])
@pytest.mark.parametrize('encoding', ['mono16', 'bgr16'])
def test_16_bit_byte_order(encoding, big_endian, backend):
    image = random_image(encoding)
    data = image.astype(image.dtype.newbyteorder('>' if big_endian else '<'))  # values kept, bytes ordered
    msg = message(encoding, data.reshape(5, -1).view(np.uint8), step=data.nbytes // 5, width=7, height=5,
                  big_endian=big_endian)
    back, _ = image_msg_to_numpy(msg, backend=backend)
    assert back.dtype == np.dtype(np.uint16)  # machine order: what image.py accepts
    np.testing.assert_array_equal(back, image)


def test_big_endian_array_is_written_in_machine_order():
    image = random_image('mono16')
    msg = numpy_to_image_msg(image.astype('>u2'), 'mono16')
    assert bool(msg.is_bigendian) == (sys.byteorder == 'big')
    np.testing.assert_array_equal(image_msg_to_numpy(msg)[0], image)


# -- YUV 4:2:2 and Bayer, converted to grey as cv_bridge converts them -----------------------------------

# cv_bridge's cvtColor codes to grey (vision_opencv cv_bridge/src/cv_bridge.cpp, getConversionCodes: the
# pairs (YUV422, GRAY), (YUV422_YUY2, GRAY), (BAYER_RGGB, GRAY), ...; the 8- and 16-bit Bayer encodings
# share a code), written out here from that table.
CV_BRIDGE_TO_GREY = {'yuv422': 'COLOR_YUV2GRAY_UYVY', 'yuv422_yuy2': 'COLOR_YUV2GRAY_YUY2',
                     'bayer_rggb': 'COLOR_BayerBG2GRAY', 'bayer_bggr': 'COLOR_BayerRG2GRAY',
                     'bayer_gbrg': 'COLOR_BayerGR2GRAY', 'bayer_grbg': 'COLOR_BayerGB2GRAY'}
BGR_INDEX = {'b': 0, 'g': 1, 'r': 2}


def colourful(height: int = 96, width: int = 128, dtype=np.uint8) -> np.ndarray:
    """A smooth bgr picture whose three channels differ everywhere (a wrong Bayer pattern shows)."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    planes = [0.5 + 0.45 * np.sin(3 * x + 2 * y + 2.1 * k) for k in range(3)]
    return (np.stack(planes, -1) * np.iinfo(dtype).max).round().astype(dtype)


def mosaic(bgr: np.ndarray, pattern: str) -> np.ndarray:
    """The Bayer image a sensor with `pattern` (sensor_msgs naming: the colours of the first row's two pixels,
    then the second row's, e.g. 'rggb') records of a bgr picture."""
    image = np.zeros(bgr.shape[:2], bgr.dtype)
    for colour, (dy, dx) in zip(pattern, ((0, 0), (0, 1), (1, 0), (1, 1))):
        image[dy::2, dx::2] = bgr[dy::2, dx::2, BGR_INDEX[colour]]
    return image


def yuv422(bgr: np.ndarray, order: str) -> np.ndarray:
    """[H, W, 2] uint8 bytes of a 4:2:2 frame of a bgr picture: full-range BT.601 (cv2.COLOR_BGR2YUV: Y is
    0.299 R + 0.587 G + 0.114 B), chroma averaged over pixel pairs; order 'yuyv' (yuv422_yuy2) or 'uyvy'
    (yuv422)."""
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV).astype(np.float64)
    luma = yuv[:, :, 0]
    u, v = [((yuv[:, 0::2, c] + yuv[:, 1::2, c]) / 2).round() for c in (1, 2)]
    chroma = np.empty(luma.shape)
    chroma[:, 0::2], chroma[:, 1::2] = u, v
    planes = (luma, chroma) if order == 'yuyv' else (chroma, luma)
    return np.stack(planes, -1).astype(np.uint8)


def test_grey_conversions_are_cv_bridges():
    """Every YUV 4:2:2 and Bayer encoding cv_bridge converts (8 and 16 bit), with its code; none else."""
    expected = {f'{name}{bits}' if name.startswith('bayer') else name: (getattr(cv2, code), bits)
                for name, code in CV_BRIDGE_TO_GREY.items() for bits in ((8, 16) if name.startswith('bayer') else (8,))}
    assert {e: code for e, (_, _, code) in GREY_CONVERSIONS.items()} == {e: code for e, (code, _) in expected.items()}
    for encoding, (dtype, channels, _) in GREY_CONVERSIONS.items():
        assert np.dtype(dtype).itemsize * 8 == expected[encoding][1] and channels == (2 if 'yuv' in encoding else 1)
    assert not set(GREY_CONVERSIONS) & set(ENCODINGS)


@pytest.mark.parametrize('bits', [8, 16])
@pytest.mark.parametrize('pattern', ['rggb', 'bggr', 'gbrg', 'grbg'])
def test_bayer_reads_as_the_grey_of_the_scene(pattern, bits):
    """A mosaic made here by the sensor_msgs naming reads as the scene's grey (demosaicing error only); each
    other pattern's code is off by at least 20 grey levels in 255 on average."""
    dtype = np.uint8 if bits == 8 else np.uint16
    bgr = colourful(dtype=dtype)
    grey, inner = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float64), np.s_[4:-4, 4:-4]
    image, order = image_msg_to_numpy(numpy_to_image_msg(mosaic(bgr, pattern), f'bayer_{pattern}{bits}'))
    assert image.shape == bgr.shape[:2] and image.dtype == np.dtype(dtype) and order == 'bgr'
    scale = np.iinfo(dtype).max / 255
    assert np.abs(image[inner] - grey[inner]).mean() < 0.5 * scale
    for other in {'rggb', 'bggr', 'gbrg', 'grbg'} - {pattern}:
        wrong = cv2.cvtColor(mosaic(bgr, pattern), GREY_CONVERSIONS[f'bayer_{other}{bits}'][2]).astype(np.float64)
        assert np.abs(wrong[inner] - grey[inner]).mean() > 20 * scale, other


@pytest.mark.parametrize('encoding, order', [('yuv422_yuy2', 'yuyv'), ('yuv422', 'uyvy')])
def test_yuv422_reads_as_the_grey_of_the_colour_frame(freiburg_paths, encoding, order):
    """A 640x480 camera frame as YUYV / UYVY reads as the grey of the colour frame (Y is that grey, to the
    rounding of each): what cv_bridge's mono8 conversion gives (issue 17, point 5)."""
    frame = cv2.imread(str(freiburg_paths[0]), cv2.IMREAD_COLOR)
    msg = numpy_to_image_msg(yuv422(frame, order), encoding)
    assert (msg.step, len(msg.data)) == (640 * 2, 640 * 480 * 2)
    grey, color_order = image_msg_to_numpy(msg)
    assert grey.shape == (480, 640) and grey.dtype == np.uint8 and color_order == 'bgr'
    assert np.abs(grey.astype(int) - cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)).max() <= 1
    swapped = 'yuv422' if encoding == 'yuv422_yuy2' else 'yuv422_yuy2'  # the other byte order reads chroma
    assert np.abs(cv2.cvtColor(yuv422(frame, order), GREY_CONVERSIONS[swapped][2]).astype(int)
                  - grey).mean() > 10


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('encoding', list(GREY_CONVERSIONS))
def test_grey_conversion_with_row_padding(encoding, backend):
    """Both backends, rows padded by the step: the grey of the data as cv2.cvtColor converts it."""
    dtype, channels, code = GREY_CONVERSIONS[encoding]
    shape = (6, 8) if channels == 1 else (6, 8, channels)
    data = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    row = data.reshape(6, -1).view(np.uint8)
    rows = np.full((6, row.shape[1] + 4), 0xAB, np.uint8)
    rows[:, :row.shape[1]] = row
    msg = message(encoding, rows, step=rows.shape[1], width=8, height=6, big_endian=not LITTLE)
    image, order = image_msg_to_numpy(msg, backend=backend)
    np.testing.assert_array_equal(image, cv2.cvtColor(data, code))
    assert order == 'bgr' and image.shape == (6, 8)
    if backend == 'cv_bridge':  # cv_bridge's own conversion, where it is installed
        from superglue_ros.ros.image_conversion import _BRIDGE
        unpadded = numpy_to_image_msg(data, encoding)
        target = 'mono16' if np.dtype(dtype).itemsize == 2 else 'mono8'
        np.testing.assert_array_equal(image, _BRIDGE.imgmsg_to_cv2(unpadded, desired_encoding=target))


# (fields of a bad message, substrings its error must contain)
BAD_MESSAGES = {
    'unsupported encoding': (dict(encoding='nv21', width=4, height=3, step=4, size=18),
                             ["encoding='nv21'", "unsupported encoding 'nv21'", 'mono8', 'rgba8', 'yuv422_yuy2',
                              'bayer_grbg16']),
    'integer depth': (dict(encoding='16UC1', width=4, height=3, step=8, size=24),
                      ["unsupported encoding '16UC1'", 'depth images are not']),
    'yuv422 step < row': (dict(encoding='yuv422_yuy2', width=4, height=3, step=6, size=18),
                          ['step=6', 'width * 2 channels * 1 bytes = 8']),
    'odd 16-bit bayer step': (dict(encoding='bayer_rggb16', width=4, height=3, step=9, size=27),
                              ['step=9', 'not a multiple of the 2-byte']),
    'float depth': (dict(encoding='32FC1', width=4, height=3, step=16, size=48), ["unsupported encoding '32FC1'"]),
    'no encoding': (dict(encoding='', width=4, height=3, step=4, size=12), ["unsupported encoding ''"]),
    'zero width': (dict(encoding='mono8', width=0, height=3, step=0, size=0), ['width=0', 'empty image']),
    'zero height': (dict(encoding='bgr8', width=4, height=0, step=12, size=0), ['height=0', 'empty image']),
    'step < row': (dict(encoding='bgr8', width=4, height=3, step=11, size=33),
                   ['step=11', 'smaller than one row', 'width * 3 channels * 1 bytes = 12']),
    'mono16 step < row': (dict(encoding='mono16', width=4, height=3, step=6, size=18),
                          ['step=6', 'width * 1 channels * 2 bytes = 8']),
    'odd 16-bit step': (dict(encoding='mono16', width=4, height=3, step=9, size=27),
                        ['step=9', 'not a multiple of the 2-byte']),
    'data too short': (dict(encoding='rgb8', width=4, height=3, step=12, size=35),
                       ['len(data)=35', 'expected len(data) = step * height = 36']),
    'data too long': (dict(encoding='mono16', width=4, height=3, step=8, size=25),
                      ['len(data)=25', 'expected len(data) = step * height = 24']),
    'no data': (dict(encoding='mono8', width=4, height=3, step=4, size=0),
                ['len(data)=0', 'expected len(data) = step * height = 12']),
}


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('case', list(BAD_MESSAGES))
def test_bad_message(case, backend):
    fields, expected = BAD_MESSAGES[case]
    msg = Image(data=array.array('B', bytes(fields['size'])), **{k: v for k, v in fields.items() if k != 'size'})
    with pytest.raises(ImageConversionError) as error:
        image_msg_to_numpy(msg, backend=backend)
    assert isinstance(error.value, ValueError)
    for text in expected:
        assert text in str(error.value)


# (array, encoding, substrings of the error)
BAD_ARRAYS = {
    'unsupported encoding': (np.zeros((4, 4), np.uint8), 'nv21', ["unsupported encoding 'nv21'", 'mono8']),
    'grey for yuv422': (np.zeros((4, 4), np.uint8), 'yuv422', ['shape (4, 4)', "'yuv422'", '[H, W, 2] uint8']),
    'float for mono16': (np.zeros((4, 4), np.float32), 'mono16', ['dtype float32', "'mono16'", 'uint16']),
    'uint16 for bgr8': (np.zeros((4, 4, 3), np.uint16), 'bgr8', ['dtype uint16', 'expected [H, W, 3] uint8']),
    'grey for bgr8': (np.zeros((4, 4), np.uint8), 'bgr8', ['shape (4, 4)', 'expected [H, W, 3] uint8']),
    '3 channels for rgba8': (np.zeros((4, 4, 3), np.uint8), 'rgba8', ['shape (4, 4, 3)', '[H, W, 4]']),
    'colour for mono8': (np.zeros((4, 4, 3), np.uint8), 'mono8', ['shape (4, 4, 3)', '[H, W] or [H, W, 1]']),
    'empty': (np.zeros((0, 4), np.uint8), 'mono8', ['empty array of shape (0, 4)']),
    'not an array': ([[0, 1], [2, 3]], 'mono8', ['expected a numpy array', 'list']),
}


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('case', list(BAD_ARRAYS))
def test_bad_array(case, backend):
    image, encoding, expected = BAD_ARRAYS[case]
    with pytest.raises(ImageConversionError) as error:
        numpy_to_image_msg(image, encoding, backend=backend)
    for text in expected:
        assert text in str(error.value)


def test_single_channel_array_as_mono():
    image = random_image('mono8')
    msg = numpy_to_image_msg(image[:, :, None], 'mono8')
    np.testing.assert_array_equal(image_msg_to_numpy(msg)[0], image)


def test_unknown_backend():
    msg = numpy_to_image_msg(random_image('mono8'), 'mono8')
    with pytest.raises(ValueError, match="backend must be one of"):
        image_msg_to_numpy(msg, backend='opencv')
    if not CV_BRIDGE_AVAILABLE:
        with pytest.raises(ValueError, match="cv_bridge is not importable"):
            image_msg_to_numpy(msg, backend='cv_bridge')


def fake_cv_bridge(root, registered: bool):
    """A cv_bridge package installed under root/prefix, known to the ament index there or not."""
    package = root / 'prefix' / 'lib' / 'site-packages' / 'cv_bridge'
    package.mkdir(parents=True)
    (package / '__init__.py').write_text('class CvBridge:\n    pass\n')
    if registered:
        marker = root / 'prefix' / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'cv_bridge'
        marker.parent.mkdir(parents=True)
        marker.touch()
    return package.parent


@pytest.mark.parametrize('registered, ament_prefix_path, used', [
    (True, 'prefix', True),        # ROS 2: the ament index knows the cv_bridge that imports
    (False, 'prefix', False),      # e.g. ROS 1's cv_bridge from PyPI in a ROS 2 environment
    (False, None, False),          # no ROS 2 environment sourced at all
    (True, 'elsewhere', False),    # the ament index knows another cv_bridge than the one imported
])
def test_only_ros2_cv_bridge_is_used(tmp_path, monkeypatch, registered, ament_prefix_path, used):
    from superglue_ros.ros import image_conversion

    monkeypatch.syspath_prepend(str(fake_cv_bridge(tmp_path, registered)))
    monkeypatch.delitem(sys.modules, 'cv_bridge', raising=False)
    if ament_prefix_path == 'elsewhere':
        fake_cv_bridge(tmp_path / 'elsewhere', registered=True)
        ament_prefix_path = str(tmp_path / 'elsewhere' / 'prefix')
    elif ament_prefix_path:
        ament_prefix_path = str(tmp_path / ament_prefix_path)
    if ament_prefix_path:
        monkeypatch.setenv('AMENT_PREFIX_PATH', ament_prefix_path)
    else:
        monkeypatch.delenv('AMENT_PREFIX_PATH', raising=False)
    try:
        bridge = image_conversion._load_cv_bridge()
    finally:
        sys.modules.pop('cv_bridge', None)  # the fake one; monkeypatch puts back any real one
    assert (bridge is not None) == used
    if used:
        assert type(bridge).__name__ == 'CvBridge'


# -- sensor_msgs/CompressedImage (image_transport's compressed plugin) ------------------------------

def smooth_image(encoding: str, height: int = 48, width: int = 64) -> np.ndarray:
    """A smooth test picture (JPEG keeps it within a few grey levels), channels of different content."""
    dtype, channels, _ = ENCODINGS[encoding]
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    planes = [0.5 + 0.4 * np.sin(3 * x + 2 * y + k) for k in range(channels)]
    image = np.stack(planes, -1) * np.iinfo(dtype).max
    return (image[:, :, 0] if channels == 1 else image).round().astype(dtype)


def compressed(data: bytes, format_: str) -> CompressedImage:
    return CompressedImage(format=format_, data=array.array('B', data))


def encoded(image: np.ndarray, extension: str) -> bytes:
    ok, data = cv2.imencode(extension, image)
    assert ok
    return data.tobytes()


# (raw encoding, codec) -> the format compressed_publisher.cpp writes
PLUGIN_FORMATS = {
    ('bgr8', 'jpeg'): 'bgr8; jpeg compressed bgr8', ('rgb8', 'jpeg'): 'rgb8; jpeg compressed bgr8',
    ('rgba8', 'jpeg'): 'rgba8; jpeg compressed bgr8', ('mono8', 'jpeg'): 'mono8; jpeg compressed mono8',
    ('bgr8', 'png'): 'bgr8; png compressed bgr8', ('rgb8', 'png'): 'rgb8; png compressed bgr8',
    ('bgra8', 'png'): 'bgra8; png compressed bgr8', ('rgb16', 'png'): 'rgb16; png compressed bgr16',
    ('bgr16', 'png'): 'bgr16; png compressed bgr16', ('mono8', 'png'): 'mono8; png compressed ',
    ('mono16', 'png'): 'mono16; png compressed ',
}


@pytest.mark.parametrize('encoding, codec', list(PLUGIN_FORMATS))
def test_compressed_round_trip(encoding, codec):
    """Colour arrives as bgr (alpha dropped, as the plugin does), grey as it was; PNG is exact, JPEG
    within a few grey levels; the bit depth of PNG is kept."""
    image = smooth_image(encoding)
    header = Header(frame_id='camera')
    msg = numpy_to_compressed_msg(image, encoding, codec, header=header)
    assert msg.format == PLUGIN_FORMATS[encoding, codec] and msg.header.frame_id == 'camera'
    back, order = compressed_msg_to_numpy(msg)
    dtype, channels, color_order = ENCODINGS[encoding]
    expected = image if channels == 1 else image[:, :, :3] if color_order == 'bgr' else image[:, :, 2::-1]
    assert order == 'bgr' and back.dtype == np.dtype(dtype) and back.shape == expected.shape
    if codec == 'png':
        np.testing.assert_array_equal(back, expected)
    else:
        assert np.abs(back.astype(int) - expected).mean() < 2
    grey = to_grayscale_float(*compressed_msg_to_numpy(msg))
    np.testing.assert_allclose(grey, to_grayscale_float(image, color_order), atol=0.03 if codec == 'jpeg' else 1e-6)


def test_compressed_real_frame(freiburg_paths):
    """A 640x480 camera frame as JPEG: the grey image the matcher sees stays within 1% on average."""
    frame = cv2.imread(str(freiburg_paths[0]), cv2.IMREAD_COLOR)
    rgb_msg = numpy_to_compressed_msg(frame[:, :, ::-1], 'rgb8', 'jpeg')
    assert rgb_msg.format == 'rgb8; jpeg compressed bgr8' and len(rgb_msg.data) < frame.nbytes / 5
    back, order = compressed_msg_to_numpy(rgb_msg)
    assert back.shape == (480, 640, 3) and order == 'bgr'
    assert np.abs(to_grayscale_float(back, order) - to_grayscale_float(frame)).mean() < 0.01


@pytest.mark.parametrize('format_, stored, expected_order', [
    ('mono8; png compressed mono8', 'mono8', 'bgr'),       # a named grey target (not the plugin's own)
    ('rgb8; png compressed rgb8', 'rgb8', 'rgb'),          # a publisher that stores rgb channel order
    ('rgb8; png compressed ', 'rgb8', 'rgb'),              # no target: passed through in the encoding's order
    ('bgra8; png compressed ', 'bgra8', 'bgr'),
    ('mono16; jpeg compressed mono8', 'mono8', 'bgr'),     # a 16-bit source: JPEG carries 8 bits
    ('bgr16; jpeg compressed bgr8', 'bgr8', 'bgr'),
    ('jpeg', 'bgr8', 'bgr'), ('png', 'mono16', 'bgr'), ('PNG', 'bgr8', 'bgr'),  # older publishers
])
def test_compressed_formats_written_by_hand(format_, stored, expected_order):
    """Messages built with cv2.imencode directly: the decoded channels, their order and bit depth."""
    image = smooth_image(stored)
    extension = '.jpg' if 'jpeg' in format_.lower() else '.png'
    back, order = compressed_msg_to_numpy(compressed(encoded(image, extension), format_))
    assert order == expected_order and back.dtype == image.dtype and back.shape == image.shape
    if extension == '.png':
        np.testing.assert_array_equal(back, image)


def test_compressed_colour_order_reaches_grey_conversion():
    """The same scene stored in bgr and in rgb channel order gives the same grey image."""
    bgr = smooth_image('bgr8')
    messages = [compressed(encoded(bgr, '.png'), 'bgr8; png compressed bgr8'),
                compressed(encoded(np.ascontiguousarray(bgr[:, :, ::-1]), '.png'), 'rgb8; png compressed rgb8')]
    grey = [to_grayscale_float(*compressed_msg_to_numpy(msg)) for msg in messages]
    np.testing.assert_array_equal(grey[0], grey[1])


def test_compressed_bad_data():
    jpeg = encoded(smooth_image('bgr8'), '.jpg')
    for data in (b'', b'not an image at all', jpeg[:len(jpeg) // 2], jpeg[:20]):
        msg = compressed(data, 'bgr8; jpeg compressed bgr8')
        with pytest.raises(ImageConversionError) as error:
            compressed_msg_to_numpy(msg)
        assert f'len(data)={len(data)}' in str(error.value) and 'not a JPEG image OpenCV can decode' in str(error.value)
        assert '\n' not in str(error.value)
        assert rejection_kind(msg, error.value) == 'undecodable'


def test_compressed_header_claiming_a_huge_image():
    """A PNG whose header claims 60000 x 60000 pixels: OpenCV's size check becomes a rejection, not a crash."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    png = (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 60000, 60000, 8, 2, 0, 0, 0))
           + chunk(b'IDAT', zlib.compress(b'\0' * 100)) + chunk(b'IEND', b''))
    msg = compressed(png, 'bgr8; png compressed bgr8')
    with pytest.raises(ImageConversionError, match='OpenCV refused to decode it .failed check: pixels <= '
                                                   'CV_IO_MAX_IMAGE_PIXELS.; check the publisher') as error:
        compressed_msg_to_numpy(msg)
    assert rejection_kind(msg, error.value) == 'undecodable'


@pytest.mark.parametrize('format_, expected', [
    ('bgr8; tiff compressed ', "codec 'tiff' is not supported"),
    ('16UC1; compressedDepth png', 'compressedDepth (depth images) is not supported'),
    ('32FC1; compressedDepth', 'compressedDepth (depth images) is not supported'),
    ('bgr8; jpeg compressed yuv422', "compressed encoding 'yuv422' is not supported"),
    ('h264', "not a format of image_transport's compressed plugin"),
    ('', "not a format of image_transport's compressed plugin"),
])
def test_compressed_unknown_format(format_, expected):
    msg = compressed(encoded(smooth_image('bgr8'), '.png'), format_)
    with pytest.raises(ImageConversionError) as error:
        compressed_msg_to_numpy(msg)
    assert expected in str(error.value) and f'format {format_!r}' in str(error.value)
    assert "expected e.g. 'bgr8; jpeg compressed bgr8'" in str(error.value) and '\n' not in str(error.value)
    assert rejection_kind(msg, error.value) == 'unsupported_format'


def test_rejection_kinds_of_compressed_and_raw_messages():
    msg = compressed(encoded(np.zeros((8, 8), np.uint8), '.png'), 'mono8; png compressed ')
    assert rejection_kind(msg, ImageError('image too small')) == 'unusable_image'
    raw = Image(encoding='32FC1', width=4, height=3, step=16, data=array.array('B', bytes(48)))
    assert rejection_kind(raw, ImageConversionError('')) == 'unsupported_encoding'
    raw = Image(encoding='yuv422_yuy2', width=4, height=3, step=8, data=array.array('B', bytes(23)))
    assert rejection_kind(raw, ImageConversionError('')) == 'size_step_data_mismatch'  # a readable encoding


@pytest.mark.parametrize('image, encoding, codec, expected', [
    (np.zeros((8, 8), np.uint16), 'mono16', 'jpeg',
     "JPEG holds 8 bits per channel: encoding 'mono16' needs codec='png'"),
    (np.zeros((8, 8), np.uint8), 'mono8', 'tiff', "codec must be one of ('jpeg', 'png')"),
    (np.zeros((8, 8), np.uint8), 'bgr8', 'png', 'does not fit encoding'),
])
def test_compressed_encoder_refuses(image, encoding, codec, expected):
    with pytest.raises(ImageConversionError) as error:
        numpy_to_compressed_msg(image, encoding, codec)
    assert expected in str(error.value)
