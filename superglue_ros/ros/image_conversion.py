"""sensor_msgs/Image <-> numpy.

image_msg_to_numpy(msg)                 -> (array [H, W] or [H, W, C], color_order for image.py)
numpy_to_image_msg(array, encoding)     -> sensor_msgs/Image

Two backends give the same results: ROS 2's cv_bridge where the distribution has it, and a plain
numpy conversion otherwise. Both run after the same validation, so a message that does not fit its
own encoding, size and step is refused with the same ImageConversionError whichever is used.
The numpy backend is zero-copy: the array is a view of msg.data (row padding skipped by strides),
except for byte-swapped 16-bit data, which is converted to the machine's order.
"""
import array
import sys
from pathlib import Path

import numpy as np
from sensor_msgs.msg import Image

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
SUPPORTED = ', '.join(ENCODINGS)
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


def _check_msg(msg: Image) -> tuple[np.dtype, int, str]:
    """Validate msg against its own encoding, size and step; return (dtype, channels, color_order)."""
    if msg.encoding not in ENCODINGS:
        raise ImageConversionError(f'{_describe(msg)}: unsupported encoding {msg.encoding!r}; supported: '
                                   f'{SUPPORTED} (convert others, e.g. bayer or yuv, with image_proc first)')
    dtype, channels, color_order = ENCODINGS[msg.encoding]
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
    return np.dtype(dtype), channels, color_order


def image_msg_to_numpy(msg: Image, backend: str | None = None) -> tuple[np.ndarray, str]:
    """sensor_msgs/Image -> (image, color_order).

    image: [H, W] (mono) or [H, W, C], dtype uint8 / uint16 in the machine's byte order; with the
    numpy backend a view of msg.data (do not modify the message while using it).
    color_order: 'bgr' or 'rgb', the channel order of the image, as image.py / Matcher.extract take it.
    Raises ImageConversionError naming the encoding, size, step and data length when they do not fit.
    """
    backend = _check_backend(backend)
    dtype, channels, color_order = _check_msg(msg)
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
    return image, color_order


def numpy_to_image_msg(image: np.ndarray, encoding: str, header=None, backend: str | None = None) -> Image:
    """[H, W] / [H, W, 1] / [H, W, C] array -> sensor_msgs/Image with the given encoding (one of
    ENCODINGS; the array's dtype and channels must fit it). Rows are unpadded, byte order the
    machine's. header: std_msgs/Header to copy into the message (default: empty)."""
    backend = _check_backend(backend)
    if encoding not in ENCODINGS:
        raise ImageConversionError(f'unsupported encoding {encoding!r}; supported: {SUPPORTED}')
    dtype, channels, _ = ENCODINGS[encoding]
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
