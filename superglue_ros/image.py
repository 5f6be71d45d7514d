"""Image input handling: validation, grey conversion (as OpenCV), optional resize.

Accepted images (numpy arrays, any strides):
    grey   [H, W] or [H, W, 1]
    colour [H, W, 3] or [H, W, 4], channels in 'bgr'(a) (OpenCV) or 'rgb'(a) order
    dtype  uint8 (scaled by 1/255), uint16 (1/65535), float32 / float64 (already in [0, 1])
    size   H, W >= MIN_SIZE

The processing order follows the original SuperGlue demo (demo_superglue.py): grey conversion
with cv2.cvtColor in the input dtype, resize with cv2.INTER_AREA, then scaling to float in [0, 1].
"""
import cv2
import numpy as np

MIN_SIZE = 16  # SuperPoint works on 8x8 cells and needs a few of them
SCALES = {np.dtype(np.uint8): 1 / 255, np.dtype(np.uint16): 1 / 65535,
          np.dtype(np.float32): 1.0, np.dtype(np.float64): 1.0}
COLOR_ORDERS = ('bgr', 'rgb')
ACCEPTED = ('grey [H, W] / [H, W, 1] or colour [H, W, 3] / [H, W, 4] numpy arrays of uint8, uint16 '
            f'or float32/float64 in [0, 1], at least {MIN_SIZE}x{MIN_SIZE} pixels')

# cv2.cvtColor codes to grey, by (channels, color_order)
_TO_GREY = {(3, 'bgr'): cv2.COLOR_BGR2GRAY, (3, 'rgb'): cv2.COLOR_RGB2GRAY,
            (4, 'bgr'): cv2.COLOR_BGRA2GRAY, (4, 'rgb'): cv2.COLOR_RGBA2GRAY}
# and to bgr for display
_TO_BGR = {(1, 'bgr'): cv2.COLOR_GRAY2BGR, (1, 'rgb'): cv2.COLOR_GRAY2BGR,
           (3, 'rgb'): cv2.COLOR_RGB2BGR, (4, 'bgr'): cv2.COLOR_BGRA2BGR,
           (4, 'rgb'): cv2.COLOR_RGBA2BGR}


class ImageError(ValueError):
    """An image that cannot be processed; the message says what was received and what is accepted."""


def _describe(image) -> str:
    if isinstance(image, np.ndarray):
        return f'array of shape {image.shape} and dtype {image.dtype}'
    return f'{type(image).__name__}'


def check_image(image, color_order: str = 'bgr') -> np.ndarray:
    """Validate an image; return it C-contiguous as [H, W] or [H, W, C] with C in (3, 4)."""
    if color_order not in COLOR_ORDERS:
        raise ValueError(f'color_order must be one of {COLOR_ORDERS}, got {color_order!r}')
    if not isinstance(image, np.ndarray):
        raise ImageError(f'got {_describe(image)}; expected {ACCEPTED}')
    if image.dtype not in SCALES:
        raise ImageError(f'unsupported dtype in {_describe(image)}; expected {ACCEPTED}')
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise ImageError(f'unsupported shape in {_describe(image)}; expected {ACCEPTED}')
    if min(image.shape[:2]) < MIN_SIZE:
        raise ImageError(f'image too small: {_describe(image)}; expected {ACCEPTED}')
    if image.dtype.kind == 'f':
        if not np.isfinite(image).all():
            raise ImageError(f'{_describe(image)} contains NaN or inf; expected finite values in [0, 1]')
        low, high = float(image.min()), float(image.max())
        if low < 0 or high > 1:
            raise ImageError(f'{_describe(image)} has values in [{low:g}, {high:g}]; float images must be '
                             'in [0, 1] (divide uint8 data by 255, or pass the uint8 array itself)')
    return np.ascontiguousarray(image)  # OpenCV wants positive, contiguous strides


def _grey_native(image: np.ndarray, color_order: str) -> np.ndarray:
    """Checked image -> grey [H, W] in its own dtype (float64 computed in float32, as OpenCV has
    no float64 colour conversion)."""
    if image.ndim == 2:
        return image
    if image.dtype == np.float64:
        image = image.astype(np.float32)
    return cv2.cvtColor(image, _TO_GREY[image.shape[2], color_order])


def _to_float(grey: np.ndarray) -> np.ndarray:
    return (grey.astype(np.float32) * np.float32(SCALES[grey.dtype])).clip(0, 1)


def to_grayscale_float(image: np.ndarray, color_order: str = 'bgr') -> np.ndarray:
    """Any accepted image -> grey [H, W] float32 in [0, 1] (cv2.cvtColor weights); ImageError otherwise."""
    return _to_float(_grey_native(check_image(image, color_order), color_order))


def prepare_image(image: np.ndarray, resize: tuple[int, int] | None,
                  color_order: str = 'bgr') -> tuple[np.ndarray, tuple[float, float]]:
    """Grey float image for SuperPoint, resized to resize=(width, height) with INTER_AREA if given.

    Returns (grey [h, w] float32 in [0, 1], (sx, sy)) where (x * sx, y * sy) maps a pixel of the
    processed image back to the input image.
    """
    image = check_image(image, color_order)
    height, width = image.shape[:2]
    grey = _grey_native(image, color_order)
    if resize is None:
        return _to_float(grey), (1.0, 1.0)
    if (not isinstance(resize, (tuple, list)) or len(resize) != 2
            or not all(isinstance(v, (int, np.integer)) and v >= MIN_SIZE for v in resize)):
        raise ValueError(f'resize must be None or (width, height), integers >= {MIN_SIZE}; got {resize!r}')
    new_width, new_height = int(resize[0]), int(resize[1])
    if (new_width, new_height) == (width, height):
        return _to_float(grey), (1.0, 1.0)
    grey = cv2.resize(grey, (new_width, new_height), interpolation=cv2.INTER_AREA)
    return _to_float(grey), (width / new_width, height / new_height)


def to_bgr8(image: np.ndarray, color_order: str = 'bgr') -> np.ndarray:
    """Any accepted image -> bgr8 [H, W, 3] for display (alpha dropped, grey replicated)."""
    image = check_image(image, color_order)
    if image.dtype != np.uint8:
        image = np.round(image.astype(np.float32) * np.float32(SCALES[image.dtype] * 255)).astype(np.uint8)
    channels = 1 if image.ndim == 2 else image.shape[2]
    if (channels, color_order) == (3, 'bgr'):
        return image.copy()
    return cv2.cvtColor(image, _TO_BGR[channels, color_order])
