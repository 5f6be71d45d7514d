"""Image input: validation, grey conversion (bit-identical to OpenCV), resize, coordinate mapping.

Accepted images (numpy arrays, any strides):
    grey   [H, W] or [H, W, 1]
    colour [H, W, 3] or [H, W, 4], channels in 'bgr'(a) (OpenCV) or 'rgb'(a) order
    dtype  uint8 (divided by 255), uint16 (by 65535), float32 / float64 (already in [0, 1])
    size   H, W >= MIN_SIZE

One path for every image, in two halves:
  host    to_upload(): validation and, only when a resize is asked for, cv2.cvtColor to grey and
          cv2.resize (INTER_AREA) in the input dtype, as the original demo (demo_superglue.py) does.
          Without a resize the host does no per-pixel work: the camera's bytes are uploaded as they
          are (uint8 colour is a quarter of a float32 grey image).
  device  grey_tensor(): the grey conversion with OpenCV's own fixed-point formula, then the scale
          to float32 in [0, 1]; bit-identical to cv2.cvtColor followed by the host float conversion.
Float images are converted on the host (OpenCV's float path), they are rare and small.

Coordinates: (x, y) pixels, origin at the centre of the top-left pixel. to_original() maps a point
of the processed (resized) image back to the image as given: the one place that does.
"""
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from .settings import MIN_IMAGE_SIZE as MIN_SIZE, resize_of

SCALES = {np.dtype(np.uint8): 1 / 255, np.dtype(np.uint16): 1 / 65535,
          np.dtype(np.float32): 1.0, np.dtype(np.float64): 1.0}
COLOR_ORDERS = ('bgr', 'rgb')
ACCEPTED = ('grey [H, W] / [H, W, 1] or colour [H, W, 3] / [H, W, 4] numpy arrays of uint8, uint16 '
            f'or float32/float64 in [0, 1], at least {MIN_SIZE}x{MIN_SIZE} pixels')

# cv2.cvtColor codes to grey, by (channels, color_order)
_TO_GREY = {(3, 'bgr'): cv2.COLOR_BGR2GRAY, (3, 'rgb'): cv2.COLOR_RGB2GRAY,
            (4, 'bgr'): cv2.COLOR_BGRA2GRAY, (4, 'rgb'): cv2.COLOR_RGBA2GRAY}
# and to bgr (for display, and image_conversion.numpy_to_compressed_msg); none for bgr already
TO_BGR = {(1, 'bgr'): cv2.COLOR_GRAY2BGR, (1, 'rgb'): cv2.COLOR_GRAY2BGR,
          (3, 'rgb'): cv2.COLOR_RGB2BGR, (4, 'bgr'): cv2.COLOR_BGRA2BGR,
          (4, 'rgb'): cv2.COLOR_RGBA2BGR}
# OpenCV's integer RGB -> grey for 8- and 16-bit images (imgproc color_rgb: fixed point with 15
# fractional bits of 0.299 R + 0.587 G + 0.114 B, rounded): grey = (B*3735 + G*19235 + R*9798 +
# 2**14) >> 15. The largest 16-bit sum, 65535 * 2**15 + 2**14, fits in int32.
GREY_WEIGHTS_BGR = (3735, 19235, 9798)
GREY_SHIFT = 15


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


grey_native = _grey_native  # for a stereo pair whose two uploads must agree (pipeline.submit)


@dataclass
class Upload:
    """What goes to the device for one image (to_upload)."""
    array: np.ndarray                 # [h, w] grey or [h, w, C] colour, uint8 / uint16 / float32, C-contiguous
    color_order: str                  # channel order of a colour array
    size: tuple[int, int]             # (width, height) of the image as given
    scale: tuple[float, float]        # (sx, sy) = given size / processed size, see to_original()

    @property
    def channels_last(self) -> np.ndarray:
        """The array as [h, w, C] (a view), what grey_tensor takes."""
        return self.array[:, :, None] if self.array.ndim == 2 else self.array

    @property
    def processed_size(self) -> tuple[int, int]:
        """(width, height) SuperPoint sees."""
        return self.array.shape[1], self.array.shape[0]


def to_upload(image: np.ndarray, resize: tuple[int, int] | None = None, color_order: str = 'bgr') -> Upload:
    """The host half of the image path: validate, and grey-convert and resize only when resize
    (width, height) differs from the image size. ImageError for an unusable image."""
    image = check_image(image, color_order)
    height, width = image.shape[:2]
    resize = resize_of(resize)  # ValueError naming the accepted sizes, before any pixel work
    if resize is None or resize == (width, height):
        if image.dtype.kind == 'f':  # host conversion (module doc)
            image = _grey_native(image, color_order).astype(np.float32, copy=False)
        return Upload(image, color_order, (width, height), (1.0, 1.0))
    grey = cv2.resize(_grey_native(image, color_order), resize, interpolation=cv2.INTER_AREA)
    if grey.dtype == np.float64:
        grey = grey.astype(np.float32)
    return Upload(grey, color_order, (width, height), (width / resize[0], height / resize[1]))


def grey_tensor(image: torch.Tensor, color_order: str = 'bgr') -> torch.Tensor:
    """The device half: Upload arrays as a tensor [..., H, W, C] (C = 1 for grey, 3 or 4 for colour;
    uint8 / uint16 / float32; on any device) -> grey [..., H, W] float32 in [0, 1].

    Bit-identical to cv2.cvtColor(..., COLOR_{BGR,RGB}[A]2GRAY) then the conversion to [0, 1] on the
    host: the integer formula of GREY_WEIGHTS_BGR for uint8 / uint16, one float32 division by the
    dtype's largest value after it, in float32, as the original's frame2tensor (frame / 255.)."""
    if image.dtype == torch.float32:  # converted on the host (to_upload)
        return image[..., 0].clamp(0, 1)
    largest = 255 if image.dtype == torch.uint8 else 65535
    if image.shape[-1] > 1:
        weights = GREY_WEIGHTS_BGR if color_order == 'bgr' else GREY_WEIGHTS_BGR[::-1]
        channels = image[..., :3].to(torch.int32)
        grey = (channels[..., 0] * weights[0] + channels[..., 1] * weights[1] + channels[..., 2] * weights[2]
                + (1 << (GREY_SHIFT - 1))) >> GREY_SHIFT
    else:
        grey = image[..., 0].to(torch.int32)
    return (grey.to(torch.float32) / largest).clamp(0, 1)


def to_original(points: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """[N, 2] (x, y) pixels of the processed image -> pixels of the image as given, float32.

    Pixel-centre convention (origin at the centre of the top-left pixel, as Matches.msg): a pixel
    spans [x - 0.5, x + 0.5], so x_given = (x + 0.5) * sx - 0.5, as hloc and LightGlue map back."""
    points = np.asarray(points, np.float32)
    if scale == (1.0, 1.0):
        return points
    scale = np.asarray(scale, np.float32)
    return (points + np.float32(0.5)) * scale - np.float32(0.5)


def to_grayscale_float(image: np.ndarray, color_order: str = 'bgr') -> np.ndarray:
    """Any accepted image -> grey [H, W] float32 in [0, 1] (cv2.cvtColor weights); ImageError otherwise."""
    return prepare_image(image, None, color_order)[0]


def prepare_image(image: np.ndarray, resize: tuple[int, int] | None,
                  color_order: str = 'bgr') -> tuple[np.ndarray, tuple[float, float]]:
    """The whole image path on the host CPU: (grey [h, w] float32 in [0, 1], scale (sx, sy) for
    to_original()); resize=(width, height) with INTER_AREA if given. Same values as the Matcher's
    device path."""
    upload = to_upload(image, resize, color_order)
    return grey_tensor(torch.from_numpy(upload.channels_last), upload.color_order).numpy(), upload.scale


def to_bgr8(image: np.ndarray, color_order: str = 'bgr') -> np.ndarray:
    """Any accepted image -> bgr8 [H, W, 3] for display (alpha dropped, grey replicated)."""
    image = check_image(image, color_order)
    if image.dtype != np.uint8:
        image = np.round(image.astype(np.float32) * np.float32(SCALES[image.dtype] * 255)).astype(np.uint8)
    channels = 1 if image.ndim == 2 else image.shape[2]
    if (channels, color_order) == (3, 'bgr'):
        return image.copy()
    return cv2.cvtColor(image, TO_BGR[channels, color_order])


def read_mask(path) -> np.ndarray:
    """A detection mask file -> [H, W] bool, True where keypoints may be. The file is a mono8 image (one
    8-bit channel, e.g. a grey PNG) of the camera's image size, zero where no keypoint may be.
    ValueError, one line naming the file, when it cannot be read or is not mono8."""
    path = Path(path)
    # said before OpenCV, which would print its own warning line and return None for each of these
    problem = ('does not exist' if not path.exists() else 'is a directory' if path.is_dir()
               else 'is an empty file' if path.is_file() and path.stat().st_size == 0 else None)
    if problem:
        raise ValueError(f'detection mask {path} {problem}; give a mono8 PNG of the camera\'s image size, zero where '
                         'no keypoint may be')
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise ValueError(f'detection mask {path}: cannot read it as an image (missing, unreadable or not an '
                         'image file); give a mono8 PNG of the camera\'s image size, zero where no keypoint may be')
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f'detection mask {path} is an image of shape {mask.shape} and dtype {mask.dtype}: a mask '
                         'must be mono8 (one 8-bit channel), zero where no keypoint may be')
    levels = np.unique(mask)
    if len(levels) > 2:
        raise ValueError(f'detection mask {path} has {len(levels)} grey levels: every non-zero pixel counts as usable, '
                         'so the levels between 0 and full (a JPEG\'s compression, soft brush edges) leak keypoints into '
                         'the masked area; save a two-level mask (0 and 255) as PNG')
    if not mask.any():
        raise ValueError(f'detection mask {path} is zero everywhere: no keypoint could ever be detected (an inverted '
                         'mask?); non-zero marks where keypoints may be, zero where they may not')
    return mask != 0


def mask_at(mask: np.ndarray, upload: Upload) -> np.ndarray:
    """A detection mask [H, W] bool of the image as given -> [h, w] bool at the size SuperPoint processes
    (cv2.resize INTER_NEAREST when a resize is set). ImageError when it is not of the image's size."""
    if mask.shape != (upload.size[1], upload.size[0]):
        raise ImageError(f'the detection mask is {mask.shape[1]}x{mask.shape[0]} pixels, this image '
                         f'{upload.size[0]}x{upload.size[1]}: the mask must have the camera\'s image size')
    if upload.processed_size == upload.size:
        return mask
    return cv2.resize(mask.view(np.uint8), upload.processed_size, interpolation=cv2.INTER_NEAREST).view(bool)
