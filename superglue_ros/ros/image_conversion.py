"""sensor_msgs/Image and sensor_msgs/CompressedImage <-> numpy.

image_msg_to_numpy(msg)                 -> (array [H, W] or [H, W, C], color_order for image.py)
numpy_to_image_msg(array, encoding)     -> sensor_msgs/Image
compressed_msg_to_numpy(msg)            -> (array, color_order), JPEG / PNG decoded with OpenCV
numpy_to_compressed_msg(array, encoding, codec) -> sensor_msgs/CompressedImage as image_transport writes it

YUV 4:2:2 and Bayer images are converted to grey on reading (the model takes grey), with the
cv2.cvtColor code cv_bridge's imgmsg_to_cv2 uses for them (GREY_CONVERSIONS). Depth images
(16UC1, 32FC1, compressedDepth) are refused.
Two backends give the same results: ROS 2's cv_bridge where the distribution has it, and a plain
numpy conversion otherwise. Both run after the same validation, so a message that does not fit its
own encoding, size and step is refused with the same ImageConversionError whichever is used.
The numpy backend is zero-copy: the array is a view of msg.data (row padding skipped by strides),
except for byte-swapped 16-bit data, which is converted to the machine's order.
"""
import array
import re
import sys
from pathlib import Path

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from ..image import TO_BGR

# encoding -> (component dtype, channels, color_order of the array as image.py reads it)
ENCODINGS = {
    'mono8': (np.uint8, 1, 'bgr'),
    'mono16': (np.uint16, 1, 'bgr'),
    'bgr8': (np.uint8, 3, 'bgr'),
    'rgb8': (np.uint8, 3, 'rgb'),
    'bgra8': (np.uint8, 4, 'bgr'),
    'rgba8': (np.uint8, 4, 'rgb'),
    'bgr16': (np.uint16, 3, 'bgr'),
    'rgb16': (np.uint16, 3, 'rgb'),
    'bgra16': (np.uint16, 4, 'bgr'),
    'rgba16': (np.uint16, 4, 'rgb'),
}
# encodings read and then converted to grey, as cv_bridge's imgmsg_to_cv2(msg, 'mono8') (16-bit Bayer:
# 'mono16') converts them: encoding -> (component dtype, channels of the data, cv2.cvtColor code to grey).
# The codes are cv_bridge's (cv_bridge.cpp, getConversionCodes). OpenCV names a Bayer pattern by the
# second row's first two pixels, sensor_msgs by the first row's: bayer_rggb is OpenCV's BayerBG.
# YUV 4:2:2 to grey keeps the Y samples: yuv422 is UYVY (U Y0 V Y1), yuv422_yuy2 is YUYV (Y0 U Y1 V).
GREY_CONVERSIONS = {
    'yuv422': (np.uint8, 2, cv2.COLOR_YUV2GRAY_UYVY),
    'yuv422_yuy2': (np.uint8, 2, cv2.COLOR_YUV2GRAY_YUY2),
    **{f'bayer_{pattern}{bits}': (dtype, 1, code)
       for bits, dtype in ((8, np.uint8), (16, np.uint16))
       for pattern, code in (('rggb', cv2.COLOR_BayerBG2GRAY), ('bggr', cv2.COLOR_BayerRG2GRAY),
                             ('gbrg', cv2.COLOR_BayerGR2GRAY), ('grbg', cv2.COLOR_BayerGB2GRAY))},
}
SUPPORTED = ', '.join([*ENCODINGS, *GREY_CONVERSIONS])
MACHINE_IS_BIGENDIAN = int(sys.byteorder == 'big')  # as sensor_msgs/Image.is_bigendian (uint8)


class ImageConversionError(ValueError):
    """An image message (or array) that cannot be converted; the message says what does not fit."""


def _load_cv_bridge():
    """ROS 2's CvBridge, or None. The cv_bridge module must be the one the ament index knows:
    a ROS 1 cv_bridge (e.g. the PyPI package) imports too but builds ROS 1 messages."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
        import cv_bridge
    except ImportError:
        return None
    try:
        prefix = Path(get_package_prefix('cv_bridge')).resolve()
    except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH, no ROS 2 environment
        return None
    if not Path(cv_bridge.__file__).resolve().is_relative_to(prefix):
        return None
    return cv_bridge.CvBridge()


_BRIDGE = _load_cv_bridge()
CV_BRIDGE_AVAILABLE = _BRIDGE is not None
BACKENDS = ('cv_bridge', 'numpy')
DEFAULT_BACKEND = 'cv_bridge' if CV_BRIDGE_AVAILABLE else 'numpy'


def _check_backend(backend: str | None) -> str:
    backend = DEFAULT_BACKEND if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS} or None (default: {DEFAULT_BACKEND}), got {backend!r}')
    if backend == 'cv_bridge' and not CV_BRIDGE_AVAILABLE:
        raise ValueError("backend 'cv_bridge' requested but ROS 2's cv_bridge is not importable; "
                         "use backend='numpy' or install ros-<distro>-cv-bridge")
    return backend


def _describe(msg: Image) -> str:
    return (f"sensor_msgs/Image(encoding={msg.encoding!r}, width={msg.width}, height={msg.height}, "
            f"step={msg.step}, is_bigendian={bool(msg.is_bigendian)}, len(data)={len(msg.data)})")


def layout(encoding: str) -> tuple[type, int] | None:
    """(component dtype, channels) of the data of an encoding this module reads, None for any other."""
    if encoding in ENCODINGS:
        return ENCODINGS[encoding][:2]
    return GREY_CONVERSIONS[encoding][:2] if encoding in GREY_CONVERSIONS else None


def _check_msg(msg: Image) -> tuple[np.dtype, int]:
    """Validate msg against its own encoding, size and step; return (dtype, channels) of its data."""
    if layout(msg.encoding) is None:
        raise ImageConversionError(f'{_describe(msg)}: unsupported encoding {msg.encoding!r}; supported: '
                                   f'{SUPPORTED} (depth images are not: publish the camera\'s image topic)')
    dtype, channels = layout(msg.encoding)
    itemsize = np.dtype(dtype).itemsize
    if msg.width == 0 or msg.height == 0:
        raise ImageConversionError(f'{_describe(msg)}: empty image, width and height must be > 0')
    row_bytes = msg.width * channels * itemsize
    if msg.step < row_bytes:
        raise ImageConversionError(
            f'{_describe(msg)}: step is smaller than one row; expected step >= width * {channels} channels * '
            f'{itemsize} bytes = {row_bytes}')
    if msg.step % itemsize:
        raise ImageConversionError(
            f'{_describe(msg)}: step is not a multiple of the {itemsize}-byte pixel component of {msg.encoding}')
    if len(msg.data) != msg.step * msg.height:
        raise ImageConversionError(
            f'{_describe(msg)}: data size does not fit; expected len(data) = step * height = '
            f'{msg.step * msg.height}')
    return np.dtype(dtype), channels


def image_msg_to_numpy(msg: Image, backend: str | None = None) -> tuple[np.ndarray, str]:
    """sensor_msgs/Image -> (image, color_order).

    image: [H, W] (mono) or [H, W, C], dtype uint8 / uint16 in the machine's byte order; with the
    numpy backend a view of msg.data (do not modify the message while using it). YUV 4:2:2 and Bayer
    encodings (GREY_CONVERSIONS) arrive as grey [H, W], uint8 (yuv422*, bayer_*8) or uint16 (bayer_*16),
    converted as cv_bridge converts them to mono8 / mono16 (a new array).
    color_order: 'bgr' or 'rgb', the channel order of the image, as image.py / Matcher.extract take it.
    Raises ImageConversionError naming the encoding, size, step and data length when they do not fit.
    """
    backend = _check_backend(backend)
    dtype, channels = _check_msg(msg)
    swapped = dtype.itemsize > 1 and bool(msg.is_bigendian) != bool(MACHINE_IS_BIGENDIAN)
    # cv_bridge's imgmsg_to_cv2 reads rows of step // pixel size whole pixels, and byte-swaps with
    # ndarray.newbyteorder (removed in numpy 2): other steps and swapped data go through numpy.
    if backend == 'cv_bridge' and not swapped and msg.step % (channels * dtype.itemsize) == 0:
        image = _BRIDGE.imgmsg_to_cv2(msg, desired_encoding='passthrough')
    else:
        components = np.frombuffer(msg.data, dtype.newbyteorder('>' if msg.is_bigendian else '<'))
        rows = components.reshape(msg.height, msg.step // dtype.itemsize)[:, :msg.width * channels]
        image = rows.reshape(msg.height, msg.width, channels) if channels > 1 else rows
    if image.dtype != dtype:  # byte-swapped: convert to the machine's order (image.py expects it)
        image = image.astype(dtype)
    if msg.encoding in GREY_CONVERSIONS:
        return cv2.cvtColor(image, GREY_CONVERSIONS[msg.encoding][2]), 'bgr'
    return image, ENCODINGS[msg.encoding][2]


def numpy_to_image_msg(image: np.ndarray, encoding: str, header=None, backend: str | None = None) -> Image:
    """[H, W] / [H, W, 1] / [H, W, C] array -> sensor_msgs/Image with the given encoding (one of
    ENCODINGS or GREY_CONVERSIONS; the array's dtype and channels must fit it: a Bayer mosaic [H, W],
    YUV 4:2:2 [H, W, 2] as its bytes come). Rows are unpadded, byte order the machine's.
    header: std_msgs/Header to copy into the message (default: empty)."""
    backend = _check_backend(backend)
    if layout(encoding) is None:
        raise ImageConversionError(f'unsupported encoding {encoding!r}; supported: {SUPPORTED}')
    dtype, channels = layout(encoding)
    if not isinstance(image, np.ndarray):
        raise ImageConversionError(f'expected a numpy array for encoding {encoding!r}, got {type(image).__name__}')
    if image.ndim == 3 and image.shape[2] == 1 and channels == 1:
        image = image[:, :, 0]
    expected_shape = '[H, W] or [H, W, 1]' if channels == 1 else f'[H, W, {channels}]'
    shape_fits = image.ndim == 2 if channels == 1 else (image.ndim == 3 and image.shape[2] == channels)
    if not shape_fits or image.dtype.newbyteorder('=') != np.dtype(dtype):  # any byte order accepted
        raise ImageConversionError(f'array of shape {image.shape} and dtype {image.dtype} does not fit encoding '
                                   f'{encoding!r}: expected {expected_shape} {np.dtype(dtype).name}')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageConversionError(f'empty array of shape {image.shape} for encoding {encoding!r}')
    image = np.ascontiguousarray(image, dtype)  # machine byte order, no row padding
    if backend == 'cv_bridge':
        msg = _BRIDGE.cv2_to_imgmsg(image, encoding=encoding)
        msg.is_bigendian = MACHINE_IS_BIGENDIAN
    else:
        data = array.array('B')
        data.frombytes(memoryview(image).cast('B'))  # one copy into the message
        msg = Image(height=image.shape[0], width=image.shape[1], encoding=encoding,
                    is_bigendian=MACHINE_IS_BIGENDIAN, step=image.shape[1] * channels * image.itemsize, data=data)
    if header is not None:
        msg.header = header
    return msg


# -- sensor_msgs/CompressedImage, as image_transport's `compressed` plugin writes it --------------------
# format, from image_transport_plugins' compressed_publisher.cpp (ROS 2 humble .. rolling):
#   '<encoding>; jpeg compressed bgr8'     colour, any 8/16-bit encoding (converted to bgr8)
#   '<encoding>; jpeg compressed mono8'    grey (converted to mono8)
#   '<encoding>; png compressed bgr8'      colour 8-bit; 'bgr16' for 16-bit colour
#   '<encoding>; png compressed '          grey 8 / 16-bit, passed through (no target named)
#   'jpeg' / 'png'                         older publishers: 1 channel is mono8, 3 channels bgr8
# The payload's channel order is the target's ('bgr...' or 'rgb...'), else the encoding's.
COMPRESSED_CODECS = ('jpeg', 'png')
_COMPRESSED_FORMAT = re.compile(r'(?P<encoding>[^;]*);\s*(?P<codec>\w+) compressed\s*(?P<target>\S*)\s*')
_LEGACY_CODECS = {'jpeg': 'jpeg', 'jpg': 'jpeg', 'png': 'png'}
_COMPRESSED_EXAMPLES = "'bgr8; jpeg compressed bgr8', 'mono16; png compressed ', or the legacy 'jpeg' / 'png'"


def compressed_format(format_: str) -> tuple[str, str]:
    """(codec, color_order of the decoded channels) of a CompressedImage.format; ImageConversionError
    for a format this module does not decode (compressedDepth, tiff, anything unknown)."""
    legacy = _LEGACY_CODECS.get(format_.strip().lower())
    if legacy:
        return legacy, 'bgr'
    match = _COMPRESSED_FORMAT.fullmatch(format_)
    if 'compressedDepth' in format_:
        problem = 'compressedDepth (depth images) is not supported'
    elif match is None:
        problem = 'not a format of image_transport\'s compressed plugin'
    elif match['codec'] not in COMPRESSED_CODECS:
        problem = f'codec {match["codec"]!r} is not supported (supported: {", ".join(COMPRESSED_CODECS)})'
    elif match['target'] and match['target'] not in ENCODINGS:
        problem = f'compressed encoding {match["target"]!r} is not supported (supported: {SUPPORTED})'
    else:
        source = match['target'] or match['encoding'].strip()
        return match['codec'], ENCODINGS[source][2] if source in ENCODINGS else 'bgr'
    raise ImageConversionError(f'sensor_msgs/CompressedImage format {format_!r}: {problem}; expected e.g. '
                               f'{_COMPRESSED_EXAMPLES}')


def compressed_msg_to_numpy(msg: CompressedImage) -> tuple[np.ndarray, str]:
    """sensor_msgs/CompressedImage (JPEG or PNG, format as image_transport's compressed plugin writes it)
    -> (image, color_order), the contract of image_msg_to_numpy.

    image: [H, W] or [H, W, C] as stored in the file (cv2.imdecode, IMREAD_UNCHANGED: no EXIF rotation):
    uint8 for JPEG (8 bits per channel even when the format names a 16-bit source; image_transport's
    subscriber would multiply it by 256, which adds no information), uint8 or uint16 for PNG.
    color_order: 'bgr' or 'rgb', the order of the decoded channels (compressed_format).
    Raises ImageConversionError: an unsupported format (compressed_format), or data OpenCV cannot decode.
    """
    codec, color_order = compressed_format(msg.format)
    data = np.frombuffer(msg.data, np.uint8)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as e:  # e.g. a header claiming more than CV_IO_MAX_IMAGE_PIXELS (2^30) pixels
        reason = 'not enough memory to decode it' if e.code == cv2.Error.StsNoMem else f'failed check: {e.err}'
        raise ImageConversionError(f'sensor_msgs/CompressedImage(format={msg.format!r}, len(data)={data.size}): '
                                   f'OpenCV refused to decode it ({reason}); check the publisher') from None
    if image is None:
        raise ImageConversionError(f'sensor_msgs/CompressedImage(format={msg.format!r}, len(data)={data.size}): '
                                   f'the data is not a {codec.upper()} image OpenCV can decode (empty, truncated '
                                   'or corrupt); check the publisher')
    if image.dtype not in (np.uint8, np.uint16) or not (image.ndim == 2 or image.shape[2] in (1, 3, 4)):
        raise ImageConversionError(f'sensor_msgs/CompressedImage(format={msg.format!r}): decoded to shape '
                                   f'{image.shape} and dtype {image.dtype}; expected 1, 3 or 4 channels of uint8 '
                                   'or uint16')
    return image, color_order


def numpy_to_compressed_msg(image: np.ndarray, encoding: str, codec: str = 'jpeg', header=None,
                            jpeg_quality: int = 95, png_level: int = 3) -> CompressedImage:
    """An image of a raw encoding (ENCODINGS; the array as numpy_to_image_msg takes it) -> a
    sensor_msgs/CompressedImage as image_transport's compressed publisher writes it: colour converted to
    bgr8 (JPEG) or bgr8 / bgr16 (PNG, alpha dropped), grey JPEG as mono8 and grey PNG as it is; format
    '<encoding>; <codec> compressed <target>'. The defaults are the plugin's (jpeg_quality 95, png_level 3).
    JPEG takes 8-bit encodings only (use png for 16-bit). ImageConversionError for anything else."""
    if encoding not in ENCODINGS:
        raise ImageConversionError(f'unsupported encoding {encoding!r} for a compressed image; supported: '
                                   f'{", ".join(ENCODINGS)}')
    if codec not in COMPRESSED_CODECS:
        raise ImageConversionError(f'codec must be one of {COMPRESSED_CODECS}, got {codec!r}')
    # checked (and as [H, W] / [H, W, C] in machine byte order) exactly as a raw image of that encoding
    array_image, color_order = image_msg_to_numpy(numpy_to_image_msg(image, encoding, backend='numpy'), backend='numpy')
    dtype, channels, _ = ENCODINGS[encoding]
    if codec == 'jpeg' and dtype != np.uint8:
        raise ImageConversionError(f'JPEG holds 8 bits per channel: encoding {encoding!r} needs codec=\'png\'')
    if channels == 1:
        target = 'mono8' if codec == 'jpeg' else ''
    else:
        target = f'bgr{8 * np.dtype(dtype).itemsize}'
        conversion = TO_BGR.get((channels, color_order))
        if conversion is not None:
            array_image = cv2.cvtColor(array_image, conversion)
    params = ([cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if codec == 'jpeg'
              else [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
    ok, data = cv2.imencode('.jpg' if codec == 'jpeg' else '.png', np.ascontiguousarray(array_image), params)
    if not ok:
        raise ImageConversionError(f'OpenCV could not encode an array of shape {array_image.shape} and dtype '
                                   f'{array_image.dtype} as {codec}')
    msg = CompressedImage(format=f'{encoding}; {codec} compressed {target}', data=array.array('B', data.tobytes()))
    if header is not None:
        msg.header = header
    return msg
