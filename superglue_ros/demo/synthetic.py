"""Synthetic sequence with exact ground truth: a textured plane seen by a moving pinhole camera.

    python -m superglue_ros.demo.synthetic DIR [--frames 30] [--size 640 480] [--seed 0] [--rate 10] [--panel]
        [--path smooth|revisit]

The scene is the plane Z = 0 of the world frame, covered by a procedural texture (multi-scale
colour noise, polygons, ellipses, lines, checkerboards and text, so that a corner detector finds
many keypoints everywhere). The camera (x right, y down, z forward) starts DISTANCE m in front of
the plane and moves along one of two paths:
  smooth   translation, zoom (distance), yaw, pitch and roll are sums of slow sines with seeded
           phases: the camera stays over one place (matching against a keyframe);
  revisit  the camera circles over the plane, REVISIT_RADIUS m around a centre, for REVISIT_LAPS
           laps, with the smooth path's sines on top: it leaves its start, sees other places, and
           comes back over the places it saw first (loop closure; Sequence.overlap is the truth).
Every frame is the texture warped by the exact plane-to-image homography, so the homography
between any two frames is known exactly.

With panel=True (--panel) a second textured plane, a PANEL_SIZE panel parallel to the first and
PANEL_DEPTH m in front of it, hides the middle of the view: the scene has two depths, so the relative
pose of two frames is determined by their correspondences (a single plane leaves the essential matrix
a two-fold ambiguity). Sequence.relative_pose(i, j) gives the true pose; the homographies then hold for
the background plane only.

Written into DIR: 000000.png, 000001.png, ... (bgr8) and sequence.json:
    width, height, rate_hz, seed, path
    camera_info      sensor_msgs/CameraInfo fields: k [9], d, r [9], p [12], distortion_model
    plane            normal and offset of the plane in the world frame (n . X = 0)
    frames[i]        file, stamp (s), homography (3x3: frame 0 pixels -> frame i pixels, of the plane
                     Z = 0), rotation (3x3, world -> camera), position (camera centre, world frame)
    panel            (with --panel) the panel's plane Z = -PANEL_DEPTH and its corners (world frame, m)
Pixel coordinates have their origin at the centre of the top-left pixel (as cv2.warpPerspective
and the Matches message).

stereo_sequence() renders the same kind of scene for a rectified stereo rig instead (in memory): at
every pose a left image, a right image from a camera STEREO_BASELINE m along the left camera's +x (same
orientation, same K: rectified by construction), their camera_infos (the right P holds Tx = -fx B) and
the exact depth of every left pixel.
"""
import argparse
import json
import string
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SEQUENCE_FILE = 'sequence.json'
FORMAT = 'superglue_ros synthetic sequence 1'
DEFAULTS = {'num_frames': 30, 'size': (640, 480), 'seed': 0, 'rate_hz': 10.0, 'path': 'smooth'}
START_STAMP = 1_700_000_000.0  # s; a fixed epoch keeps the files reproducible, and stamps look real
DISTANCE = 2.0                 # m, camera to plane at rest
MARGIN = 16                    # px of texture kept around the union of all views

# Camera path: amplitude of each motion component (sines over the whole sequence).
MOTION = {'x': 0.30, 'y': 0.20,          # m, sideways / vertical translation
          'zoom': 0.20,                  # relative change of the distance to the plane
          'yaw': 8.0, 'pitch': 6.0, 'roll': 12.0}  # degrees
PATH_FRAMES = 30  # the sines have 0.3 to 0.9 periods per this many frames
PANEL_DEPTH = 0.8          # m in front of the plane Z = 0 (towards the camera), with panel=True
PANEL_SIZE = (1.0, 0.7)    # m, centred on the camera path's mean position
STEREO_BASELINE = 0.25  # m, left to right camera of stereo_sequence(): 64 px of disparity at rest (640x480)
PATHS = ('smooth', 'revisit')
REVISIT_RADIUS = 2.0  # m: the circle (12.6 m) is about five view widths long, its diameter 1.6 of them
REVISIT_LAPS = 1.4    # the last 0.4 lap flies over the first places again


@dataclass
class Sequence:
    """A generated sequence as read back from its directory."""
    directory: Path
    files: list[Path]
    stamps: np.ndarray         # [N] s
    homographies: np.ndarray   # [N, 3, 3] frame 0 pixels -> frame i pixels
    camera_info: dict          # sensor_msgs/CameraInfo field names (width, height, k, d, r, p, ...)
    rotations: np.ndarray      # [N, 3, 3] world -> camera
    positions: np.ndarray      # [N, 3] camera centres, world frame
    rate_hz: float

    def __len__(self):
        return len(self.files)

    def homography(self, i: int, j: int) -> np.ndarray:
        """Exact homography mapping pixels of frame i to pixels of frame j (3x3, H[2, 2] = 1)."""
        return normalized(self.homographies[j] @ np.linalg.inv(self.homographies[i]))

    def relative_pose(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """True pose of frame j in frame i's camera optical frame, T_i_j = (R [3, 3], t [3] metres):
        p_i = R p_j + t (pose.py's convention, with i the keyframe)."""
        rotation_i, rotation_j = self.rotations[i], self.rotations[j]
        return rotation_i @ rotation_j.T, rotation_i @ (self.positions[j] - self.positions[i])

    def overlap(self, i: int, j: int) -> float:
        """Fraction of frame i's image that frame j also sees (0..1), by the exact homography."""
        width, height = int(self.camera_info['width']), int(self.camera_info['height'])
        corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float32)
        in_i = cv2.perspectiveTransform(corners[:, None], self.homography(j, i))[:, 0]
        area, _ = cv2.intersectConvexConvex(corners, in_i.astype(np.float32))
        return float(area) / float((width - 1) * (height - 1))

    def image(self, i: int) -> np.ndarray:
        image = cv2.imread(str(self.files[i]), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f'cannot read frame {i} of the synthetic sequence: {self.files[i]}')
        return image


def intrinsics(size: tuple[int, int]) -> np.ndarray:
    """K of the synthetic camera: square pixels, ~64 degree horizontal field of view, centred."""
    width, height = size
    focal = 0.8 * width
    return np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])


def camera_path(num_frames: int, seed: int, path: str = 'smooth') -> tuple[np.ndarray, np.ndarray]:
    """Camera motion (module doc): rotations [N, 3, 3] (world -> camera) and centres [N, 3].

    Each component is a sum of two sines of the frame index (so with the same seed, the smooth path of a
    shorter sequence is the start of a longer one's); frequencies and phases come from the seed. 'revisit'
    adds a circle of REVISIT_LAPS laps over the whole sequence, starting at the smooth path's start."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames)[:, None] / PATH_FRAMES
    freqs = rng.uniform(0.3, 0.9, (2, len(MOTION)))
    phases = rng.uniform(0, 2 * np.pi, (2, len(MOTION)))
    waves = 0.5 * (np.sin(2 * np.pi * freqs[0] * t + phases[0]) + np.sin(2 * np.pi * freqs[1] * t + phases[1]))
    circle = path == 'revisit'
    path = dict(zip(MOTION, (waves * np.array(list(MOTION.values()))).T))  # name -> [N]

    yaw, pitch, roll = (np.radians(path[k]) for k in ('yaw', 'pitch', 'roll'))
    rotations = np.stack([rotation_z(r) @ rotation_x(p) @ rotation_y(y) for y, p, r in zip(yaw, pitch, roll)])
    positions = np.stack([path['x'], path['y'], -DISTANCE * (1 + path['zoom'])], axis=1)
    if circle:
        angle = 2 * np.pi * REVISIT_LAPS * np.arange(num_frames) / max(num_frames - 1, 1)
        positions[:, 0] += REVISIT_RADIUS * (np.cos(angle) - 1)
        positions[:, 1] += REVISIT_RADIUS * np.sin(angle)
    return rotations, positions


def rotation_x(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rotation_y(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rotation_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def plane_to_image(K, rotation, position, z: float = 0.0) -> np.ndarray:
    """Homography of the plane Z = z, point (X, Y, 1) in m, to pixels: K [r1 r2 (z r3 + t)], t = -R C."""
    t = -rotation @ position
    return K @ np.column_stack([rotation[:, 0], rotation[:, 1], z * rotation[:, 2] + t])


def normalized(H: np.ndarray) -> np.ndarray:
    return H / H[2, 2]


def scene_homographies(K, rotations, positions, size) -> tuple[np.ndarray, tuple[int, int]]:
    """Texture pixels -> image pixels for every frame [N, 3, 3], and the texture size (width, height).

    One texture pixel is one image pixel of the camera at rest; the texture is just large enough
    to hold every view (the footprints of all frames on the plane, plus MARGIN)."""
    width, height = size
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [width - 1, height - 1, 1], [0, height - 1, 1]], float).T
    to_plane = [np.linalg.inv(plane_to_image(K, R, C)) for R, C in zip(rotations, positions)]
    footprint = np.concatenate([(Hinv @ corners)[:2] / (Hinv @ corners)[2] for Hinv in to_plane], axis=1)
    metres_per_pixel = DISTANCE / K[0, 0]
    low = footprint.min(axis=1) - MARGIN * metres_per_pixel
    high = footprint.max(axis=1) + MARGIN * metres_per_pixel
    texture_size = tuple(int(v) for v in np.ceil((high - low) / metres_per_pixel) + 1)
    pixels_to_plane = np.array([[metres_per_pixel, 0, low[0]], [0, metres_per_pixel, low[1]], [0, 0, 1]])
    homographies = np.stack([normalized(plane_to_image(K, R, C) @ pixels_to_plane)
                             for R, C in zip(rotations, positions)])
    return homographies, texture_size


def make_texture(size: tuple[int, int], seed: int) -> np.ndarray:
    """Procedural bgr8 texture [height, width, 3], rich in corners and blobs at all scales."""
    width, height = size
    rng = np.random.default_rng(seed)
    # Multi-scale colour noise: smooth shading plus fine grain.
    texture = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((160, 0.45), (40, 0.3), (10, 0.15), (3, 0.1)):
        grid = rng.random((height // cell + 2, width // cell + 2, 3)).astype(np.float32)
        texture += weight * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    texture = np.clip(texture * 255, 0, 255).astype(np.uint8)

    def color():
        return tuple(int(c) for c in rng.integers(0, 256, 3))

    def point():
        return int(rng.integers(0, width)), int(rng.integers(0, height))

    area = width * height
    for _ in range(area // 2500):  # shapes, sizes log-uniform between 4 and 80 px
        kind = rng.choice(4, p=[0.35, 0.35, 0.2, 0.1])
        centre, radius = np.array(point()), 4 * 20 ** rng.random()
        if kind == 0:    # convex polygon
            angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 7)))
            polygon = centre + radius * np.stack([np.cos(angles), np.sin(angles)], 1)
            cv2.fillConvexPoly(texture, polygon.astype(np.int32), color(), cv2.LINE_AA)
        elif kind == 1:  # ellipse, filled or outlined
            axes = (int(radius), int(radius * rng.uniform(0.3, 1)))
            cv2.ellipse(texture, tuple(int(c) for c in centre), axes, float(rng.uniform(0, 180)), 0, 360,
                        color(), -1 if rng.random() < 0.6 else int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 2:  # rectangle outline
            corner = centre + radius * rng.uniform(0.5, 1.5, 2)
            cv2.rectangle(texture, tuple(int(c) for c in centre), tuple(int(c) for c in corner), color(),
                          int(rng.integers(1, 4)), cv2.LINE_AA)
        else:            # line segment
            cv2.line(texture, point(), tuple(int(c) for c in centre + 2 * radius * rng.normal(size=2)),
                     color(), int(rng.integers(1, 4)), cv2.LINE_AA)

    for _ in range(area // 100000):  # rotated checkerboards
        centre, cell, angle = np.array(point()), rng.uniform(5, 10), rng.uniform(0, np.pi)
        axes = cell * np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        dark, light = color(), color()
        for i in range(-2, 2):
            for j in range(-2, 2):
                square = np.array([[i, j], [i + 1, j], [i + 1, j + 1], [i, j + 1]]) @ axes + centre
                cv2.fillConvexPoly(texture, square.astype(np.int32), dark if (i + j) % 2 else light, cv2.LINE_AA)

    fonts = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)
    letters = string.ascii_uppercase + string.digits
    for _ in range(area // 20000):  # words
        word = ''.join(rng.choice(list(letters), rng.integers(2, 8)))
        cv2.putText(texture, word, point(), fonts[rng.integers(len(fonts))], float(rng.uniform(0.5, 1.8)),
                    color(), int(rng.integers(1, 3)), cv2.LINE_AA)

    return cv2.GaussianBlur(texture, (0, 0), 0.7)  # soften aliasing before the warps


def render(texture: np.ndarray, homography: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The view of the texture through homography (texture pixels -> image pixels), bgr8 [H, W, 3]."""
    return cv2.warpPerspective(texture, homography, size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def render_panel(image: np.ndarray, K, rotation, position, corners: np.ndarray, texture: np.ndarray):
    """Draw the panel (plane Z = corners[0, 2], corners [4, 3] world m, texture bgr8) over `image`, in place."""
    low, high = corners[:, :2].min(axis=0), corners[:, :2].max(axis=0)
    height, width = texture.shape[:2]
    pixels_to_plane = np.array([[(high[0] - low[0]) / width, 0, low[0]], [0, (high[1] - low[1]) / height, low[1]],
                                [0, 0, 1]])
    H = normalized(plane_to_image(K, rotation, position, corners[0, 2]) @ pixels_to_plane)
    size = (image.shape[1], image.shape[0])
    cover = cv2.warpPerspective(np.full((height, width), 255, np.uint8), H, size, flags=cv2.INTER_NEAREST)
    image[cover > 0] = render(texture, H, size)[cover > 0]


def generate_sequence(directory, num_frames: int = DEFAULTS['num_frames'], size=DEFAULTS['size'],
                      seed: int = DEFAULTS['seed'], rate_hz: float = DEFAULTS['rate_hz'], panel: bool = False,
                      path: str = DEFAULTS['path']) -> Sequence:
    """Write the sequence (PNG frames + sequence.json) into directory and return it. panel: a second
    plane in front of the first (module doc), for true relative poses. path: one of PATHS.

    Deterministic: the same arguments give the same files. Existing frames of an earlier sequence
    in directory are removed first, so the directory holds exactly this sequence."""
    width, height = int(size[0]), int(size[1])
    if num_frames < 2:
        raise ValueError(f'num_frames must be at least 2 (a sequence needs motion), got {num_frames}')
    if width < 64 or height < 64:
        raise ValueError(f'image size must be at least 64x64 pixels, got {width}x{height}')
    if not rate_hz > 0:
        raise ValueError(f'rate_hz must be > 0, got {rate_hz}')
    if path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob('[0-9][0-9][0-9][0-9][0-9][0-9].png'):
        old.unlink()

    K = intrinsics((width, height))
    rotations, positions = camera_path(num_frames, seed, path)
    from_texture, texture_size = scene_homographies(K, rotations, positions, (width, height))
    texture = make_texture(texture_size, seed)
    corners = None
    if panel:
        centre, (half_x, half_y) = positions.mean(axis=0)[:2], np.array(PANEL_SIZE) / 2
        corners = np.array([[centre[0] + sx * half_x, centre[1] + sy * half_y, -PANEL_DEPTH]
                            for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
        pixels_per_metre = K[0, 0] / (DISTANCE - PANEL_DEPTH)  # about one texture pixel per image pixel
        panel_texture = make_texture(tuple(int(v * pixels_per_metre) for v in PANEL_SIZE), seed + 1)

    frames = []
    for i, H in enumerate(from_texture):
        name = f'{i:06d}.png'
        image = render(texture, H, (width, height))
        if panel:
            render_panel(image, K, rotations[i], positions[i], corners, panel_texture)
        cv2.imwrite(str(directory / name), image)
        frames.append({'file': name, 'stamp': START_STAMP + i / rate_hz,
                       'homography': normalized(H @ np.linalg.inv(from_texture[0])).tolist(),
                       'rotation': rotations[i].tolist(), 'position': positions[i].tolist()})
    projection = np.column_stack([K, np.zeros(3)])
    camera_info = {'width': width, 'height': height, 'distortion_model': 'plumb_bob', 'd': [0.0] * 5,
                   'k': K.ravel().tolist(), 'r': np.eye(3).ravel().tolist(), 'p': projection.ravel().tolist()}
    description = {'format': FORMAT, 'width': width, 'height': height, 'rate_hz': rate_hz, 'seed': seed, 'path': path,
                   'camera_info': camera_info, 'plane': {'normal': [0.0, 0.0, 1.0], 'offset': 0.0},
                   'frames': frames}
    if panel:
        description['panel'] = {'normal': [0.0, 0.0, 1.0], 'offset': -PANEL_DEPTH, 'corners': corners.tolist()}
    (directory / SEQUENCE_FILE).write_text(json.dumps(description, indent=1))
    return load_sequence(directory)


@dataclass
class StereoFrame:
    """One pose of a rectified stereo rig over the textured plane (stereo_sequence)."""
    left: np.ndarray           # bgr8 [H, W, 3]
    right: np.ndarray          # bgr8 [H, W, 3], the camera baseline_m along the left camera's +x
    stamp: float               # s
    left_info: dict            # sensor_msgs/CameraInfo fields (width, height, k, d, r, p, distortion_model)
    right_info: dict           # the same K, R = identity, P = [K | (-fx B, 0, 0)]
    baseline_m: float
    K: np.ndarray              # [3, 3] of both cameras
    rotation: np.ndarray       # [3, 3] world -> camera, both cameras
    position: np.ndarray       # [3] left camera centre, world frame

    def depth_at(self, points) -> np.ndarray:
        """Exact depth (metres along the left optical axis, z) of left-image pixels [K, 2] (x, y): where
        the pixel's ray meets the plane Z = 0."""
        points = np.asarray(points, np.float64).reshape(-1, 2)
        rays = np.linalg.inv(self.K) @ np.vstack([points.T, np.ones(len(points))])  # camera frame, z = 1
        return -self.position[2] / (self.rotation.T @ rays)[2]

    @property
    def depth(self) -> np.ndarray:
        """[H, W] float32 exact depth of every left pixel, metres."""
        height, width = self.left.shape[:2]
        x, y = np.meshgrid(np.arange(width), np.arange(height))
        return self.depth_at(np.stack([x.ravel(), y.ravel()], 1)).reshape(height, width).astype(np.float32)

    def right_points(self, points) -> np.ndarray:
        """Where left pixels [K, 2] appear in the right image: same row, x - fx B / Z (rectified pair)."""
        points = np.asarray(points, np.float64).reshape(-1, 2)
        return np.stack([points[:, 0] - self.K[0, 0] * self.baseline_m / self.depth_at(points), points[:, 1]], 1)


def stereo_sequence(num_frames: int = 3, size=DEFAULTS['size'], seed: int = DEFAULTS['seed'],
                    rate_hz: float = DEFAULTS['rate_hz'], baseline_m: float = STEREO_BASELINE) -> list[StereoFrame]:
    """A rectified stereo rig moving along the camera path of generate_sequence (same seed, same left
    images' poses), rendered in memory: [num_frames] StereoFrame. Deterministic."""
    width, height = int(size[0]), int(size[1])
    if num_frames < 1 or width < 64 or height < 64 or not baseline_m > 0:
        raise ValueError(f'stereo_sequence needs num_frames >= 1, a size of at least 64x64 and a baseline > 0, got '
                         f'{num_frames}, {width}x{height}, {baseline_m}')
    K = intrinsics((width, height))
    rotations, positions = camera_path(num_frames, seed)
    right_positions = positions + np.einsum('nji,j->ni', rotations, [baseline_m, 0.0, 0.0])  # C + R^T (B, 0, 0)
    from_texture, texture_size = scene_homographies(K, np.concatenate([rotations, rotations]),
                                                    np.concatenate([positions, right_positions]), (width, height))
    texture = make_texture(texture_size, seed)
    left_info = {'width': width, 'height': height, 'distortion_model': 'plumb_bob', 'd': [0.0] * 5,
                 'k': K.ravel().tolist(), 'r': np.eye(3).ravel().tolist(),
                 'p': np.column_stack([K, np.zeros(3)]).ravel().tolist()}
    right_info = {**left_info, 'p': np.column_stack([K, [-K[0, 0] * baseline_m, 0, 0]]).ravel().tolist()}
    return [StereoFrame(render(texture, from_texture[i], (width, height)),
                        render(texture, from_texture[num_frames + i], (width, height)),
                        START_STAMP + i / rate_hz, left_info, right_info, baseline_m, K, rotations[i], positions[i])
            for i in range(num_frames)]


def load_sequence(directory) -> Sequence:
    """Read a sequence written by generate_sequence; ValueError saying what is missing or wrong."""
    directory = Path(directory)
    path = directory / SEQUENCE_FILE
    try:
        description = json.loads(path.read_text())
        if description.get('format') != FORMAT:
            raise ValueError(f"format is {description.get('format')!r}, expected {FORMAT!r}")
        frames = description['frames']
        files = [directory / frame['file'] for frame in frames]
        sequence = Sequence(
            directory=directory, files=files,
            stamps=np.array([frame['stamp'] for frame in frames], float),
            homographies=np.array([frame['homography'] for frame in frames], float).reshape(-1, 3, 3),
            camera_info=description['camera_info'],
            rotations=np.array([frame['rotation'] for frame in frames], float).reshape(-1, 3, 3),
            positions=np.array([frame['position'] for frame in frames], float).reshape(-1, 3),
            rate_hz=float(description['rate_hz']))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f'{path} is not a readable synthetic sequence ({type(e).__name__}: {e}); '
                         f'generate one with: python -m superglue_ros.demo.synthetic {directory}') from None
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ValueError(f'{path} lists frames that do not exist: {missing[:3]}; regenerate the sequence with: '
                         f'python -m superglue_ros.demo.synthetic {directory}')
    return sequence


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m superglue_ros.demo.synthetic',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('directory', type=Path, help='output directory (frames and sequence.json)')
    parser.add_argument('--frames', type=int, default=DEFAULTS['num_frames'], help='number of frames (default: 30)')
    parser.add_argument('--size', type=int, nargs=2, default=DEFAULTS['size'], metavar=('WIDTH', 'HEIGHT'),
                        help='image size (default: 640 480)')
    parser.add_argument('--seed', type=int, default=DEFAULTS['seed'], help='texture and path seed (default: 0)')
    parser.add_argument('--rate', type=float, default=DEFAULTS['rate_hz'],
                        help='frame rate of the stamps in Hz (default: 10)')
    parser.add_argument('--panel', action='store_true',
                        help='a second textured plane in front of the first: a scene with two depths, for relative poses')
    parser.add_argument('--path', choices=PATHS, default=DEFAULTS['path'],
                        help='camera path: smooth (stays over one place) or revisit (circles back over its start); '
                             'default: smooth')
    args = parser.parse_args(argv)
    try:
        sequence = generate_sequence(args.directory, args.frames, tuple(args.size), args.seed, args.rate,
                                     panel=args.panel, path=args.path)
    except ValueError as e:
        parser.error(str(e))
    print(f'wrote {len(sequence)} frames and {SEQUENCE_FILE} to {args.directory}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
