"""Image sources for the publisher and the demo: each iterates (stamp in s, bgr8 image [H, W, 3]).

A frame that cannot be decoded (a corrupt file in a folder, a garbled or unconvertible bag message) is
skipped: Source.frames records it in Source.skipped, reports it through Source.on_skip, and goes on
with the next frame. Only an unreadable source as a whole (a truncated bag, say) raises SourceError.

open_source(spec) picks the kind from what spec is:
    synthetic sequence   directory with sequence.json (synthetic.py): its stamps, camera_info and
                         ground-truth homographies
    ROS 2 bag            rosbag2 directory (metadata.yaml; sqlite3 or MCAP storage, zstd file or
                         message compression), or one .db3 / .mcap file
    ROS 1 bag            a .bag file, or a directory of .bag files (read as one recording)
                         Bags: sensor_msgs/Image or CompressedImage messages, stamps from their headers
                         (the recording time where a header stamp is zero), camera_info from a
                         sensor_msgs/CameraInfo topic if the bag has one
    image folder         files sorted by name (digits compared as numbers); when every name is a
                         number of seconds (the TUM RGB-D / freiburg layout, 1341847980.722988.png)
                         those are the stamps, otherwise frame i has stamp i / rate_hz
    video file           anything cv2.VideoCapture reads; frame i has stamp i / (the file's frame rate)

Bags are read and their messages decoded with rosbags (pure Python, no ROS installation needed), using
the message definitions stored in the bag, else the ROS 2 Jazzy ones (sensor_msgs is the same in every
ROS 2 distribution). Raw images are converted by ros/image_conversion.py (numpy backend), which needs
sensor_msgs importable. camera_info is a dict with the ROS 2 sensor_msgs/CameraInfo field names (width,
height, distortion_model, d, k, r, p; a ROS 1 bag's D, K, R, P are renamed), or None when the source has no
calibration.
"""
import re
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from ..image import ImageError, to_bgr8
from .synthetic import SEQUENCE_FILE, load_sequence

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.ppm', '.pgm', '.pnm', '.webp')
ROS2_SUFFIXES = ('.db3', '.mcap')
ROS1_SUFFIX = '.bag'
BAG_SUFFIXES = ROS2_SUFFIXES + (ROS1_SUFFIX,)
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')  # rosbags names ROS 1 types alike
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
DEFAULT_RATE_HZ = 10.0
TIMESTAMP_NAME = re.compile(r'\d+(\.\d+)?')


class SourceError(ValueError):
    """A source that cannot be read; the message says which file and why."""


class FrameError(SourceError):
    """One frame that cannot be decoded; Source.frames skips it."""


def natural_key(path: Path):
    """'frame2' < 'frame10': digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', path.name)]


class Source:
    """Base of the sources: iterate for (stamp, image); len() is the number of frames, skipped ones included.

    on_skip(index, reason) is called for each frame that cannot be decoded (default: nothing); skipped
    lists (index, reason) of those seen so far. Subclasses implement _readers."""
    kind = ''
    camera_info: dict | None = None
    sequence = None  # synthetic.Sequence with the ground truth, synthetic sources only

    def __init__(self, path: Path):
        self.path = path
        self.skipped: list[tuple[int, str]] = []
        self.on_skip = None

    def describe(self) -> str:
        return f'{self.kind} {self.path} ({len(self)} frames)'

    def frames(self):
        """(source index, stamp in s, bgr8 image) per decodable frame; indices count skipped frames too."""
        for index, read in enumerate(self._readers()):
            try:
                stamp, image = read()
            except FrameError as e:
                self.skipped.append((index, str(e)))
                if self.on_skip is not None:
                    self.on_skip(index, str(e))
                continue
            yield index, stamp, image

    def __iter__(self):
        return ((stamp, image) for _, stamp, image in self.frames())

    def _readers(self):
        """One callable per frame, in order, returning (stamp, image) or raising FrameError."""
        raise NotImplementedError


class SyntheticSource(Source):
    kind = 'synthetic sequence'

    def __init__(self, path: Path):
        super().__init__(path)
        try:
            self.sequence = load_sequence(path)
        except ValueError as e:
            raise SourceError(str(e)) from None
        self.camera_info = self.sequence.camera_info

    def __len__(self):
        return len(self.sequence)

    def _readers(self):
        for i, stamp in enumerate(self.sequence.stamps):
            yield lambda i=i, stamp=stamp: (float(stamp), self.sequence.image(i))


class FolderSource(Source):
    kind = 'image folder'

    def __init__(self, path: Path, rate_hz: float = DEFAULT_RATE_HZ):
        super().__init__(path)
        files = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        if not files:
            raise SourceError(f'{path} holds no images ({", ".join(IMAGE_SUFFIXES)}) and is neither a synthetic '
                              f'sequence ({SEQUENCE_FILE}) nor a ROS bag (metadata.yaml, *.db3, *.mcap, *.bag)')
        if all(TIMESTAMP_NAME.fullmatch(p.stem) for p in files):  # names are the capture times
            self.files = sorted(files, key=lambda p: float(p.stem))
            self.stamps = [float(p.stem) for p in self.files]
        else:
            self.files = sorted(files, key=natural_key)
            self.stamps = [i / rate_hz for i in range(len(self.files))]

    def __len__(self):
        return len(self.files)

    def _readers(self):
        for stamp, file in zip(self.stamps, self.files):
            yield lambda stamp=stamp, file=file: (stamp, self._read(file))

    @staticmethod
    def _read(file: Path) -> np.ndarray:
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            raise FrameError(f'cannot read {file} as an image (corrupt, or a format OpenCV does not read)')
        return image


class VideoSource(Source):
    kind = 'video'

    def __init__(self, path: Path, rate_hz: float = DEFAULT_RATE_HZ):
        super().__init__(path)
        capture = cv2.VideoCapture(str(path))
        # opened is not enough: OpenCV "opens" any file whose decoder then fails (a text file named .png)
        if not capture.isOpened() or not capture.read()[0]:
            capture.release()
            raise SourceError(f'cannot read {path}: not an image folder, a ROS bag ({", ".join(BAG_SUFFIXES)}) '
                              'or a video file OpenCV can decode a frame of')
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps > 0 else rate_hz  # some containers do not tell their frame rate
        self.frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()

    def __len__(self):
        return max(self.frame_count, 0)  # as the container tells it

    def _readers(self):
        capture = cv2.VideoCapture(str(self.path))
        try:
            index = 0
            while True:  # a frame OpenCV cannot decode ends the video: it cannot tell one from the end
                ok, image = capture.read()
                if not ok:
                    return
                yield lambda stamp=index / self.fps, image=image: (stamp, image)
                index += 1
        finally:
            capture.release()


class BagSource(Source):
    """A ROS 2 or ROS 1 recording, read with rosbags (see the module doc). topic: the image topic, needed
    when the bag has several; SourceError when the bag cannot be read or has no such topic."""

    def __init__(self, path: Path, topic: str | None = None):
        super().__init__(path)
        self.paths = bag_paths(path)
        self.kind = 'ROS 1 bag' if self.paths[0].suffix == ROS1_SUFFIX else 'ROS 2 bag'
        with open_bag(self.path, self.paths) as reader:
            topics = reader.topics
            types = {name: info.msgtype for name, info in topics.items()}
            images = sorted(name for name, type_ in types.items() if type_ in IMAGE_TYPES)
            listing = ', '.join(f'{name} ({type_})' for name, type_ in sorted(types.items())) or 'none'
            if topic is not None:
                if types.get(topic) not in IMAGE_TYPES:
                    raise SourceError(f'{path}: topic {topic!r} is not an image topic of this bag; its topics: '
                                      f'{listing}')
            elif len(images) != 1:
                raise SourceError(f'{path}: {"no" if not images else "several"} image topics '
                                  f'({", ".join(IMAGE_TYPES)}); its topics: {listing}'
                                  + ('; choose one with --topic' if images else ''))
            self.topic = topic or images[0]
            self.image_type = types[self.topic]
            self._length = topics[self.topic].msgcount
            self.camera_info = self._first_camera_info(reader, types)

    def describe(self) -> str:
        return f'{self.kind} {self.path}, topic {self.topic} ({len(self)} frames)'

    def __len__(self):
        return self._length

    def _readers(self):
        with open_bag(self.path, self.paths) as reader:
            connections = [c for c in reader.connections if c.topic == self.topic]
            with bag_errors(self.path):
                for connection, time_ns, data in reader.messages(connections=connections):
                    yield lambda connection=connection, time_ns=time_ns, data=data: self._frame(
                        reader, connection, time_ns, data)

    def _frame(self, reader, connection, time_ns: int, data: bytes) -> tuple[float, np.ndarray]:
        """(stamp: the header's, else the recording time; bgr8 image) of one serialised image message."""
        from rosbags.highlevel import AnyReaderError
        try:
            message = reader.deserialize(data, connection.msgtype)
        except (AnyReaderError, ValueError, UnicodeDecodeError) as e:  # a garbled ROS 1 string decodes badly
            raise FrameError(f'{self.path}: a garbled message on {self.topic} at recording time '
                             f'{time_ns * 1e-9:.3f} s ({" ".join(str(e).split()) or type(e).__name__})') from None
        stamp = message.header.stamp.sec + message.header.stamp.nanosec * 1e-9
        return (stamp if stamp > 0 else time_ns * 1e-9), self._to_bgr(message)

    def _messages(self, reader, topics: list[str]):
        """(recording time ns, decoded message) on topics, in recording order."""
        connections = [c for c in reader.connections if c.topic in topics]
        with bag_errors(self.path):
            for connection, time_ns, data in reader.messages(connections=connections):
                yield time_ns, reader.deserialize(data, connection.msgtype)

    def _to_bgr(self, message) -> np.ndarray:
        if self.image_type == 'sensor_msgs/msg/CompressedImage':
            image = cv2.imdecode(np.frombuffer(message.data, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise FrameError(f'{self.path}: cannot decode a {message.format!r} image on {self.topic}')
            return image
        from ..ros.image_conversion import ImageConversionError, image_msg_to_numpy
        try:
            return to_bgr8(*image_msg_to_numpy(message, backend='numpy'))  # rosbags messages, not rclpy ones
        except (ImageConversionError, ImageError) as e:
            raise FrameError(f'{self.path}: unusable image on {self.topic}: {e}') from None

    def _first_camera_info(self, reader, types: dict) -> dict | None:
        """The first CameraInfo of the camera: the topic next to the image topic, else the only one."""
        infos = [name for name, type_ in types.items() if type_ == CAMERA_INFO_TYPE]
        namespace = self.topic.rsplit('/', 1)[0]
        nearby = [name for name in infos if name.rsplit('/', 1)[0] == namespace]
        chosen = nearby if len(nearby) == 1 else infos
        if len(chosen) != 1:
            return None
        for _, info in self._messages(reader, chosen):
            ros1 = not hasattr(info, 'k')  # ROS 1 names the matrices D, K, R, P
            return {'width': int(info.width), 'height': int(info.height), 'distortion_model': info.distortion_model,
                    **{name: [float(v) for v in getattr(info, name.upper() if ros1 else name)] for name in 'dkrp'}}
        return None


@contextmanager
def bag_errors(path: Path):
    """rosbags' errors (unreadable storage, metadata, compression, message definitions, CDR data) as
    SourceError naming the bag."""
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag1 import ReaderError as Ros1Error
    from rosbags.rosbag2 import ReaderError as Ros2Error
    from rosbags.serde import SerdeError
    from rosbags.typesys import TypesysError
    try:
        import apsw  # rosbags' sqlite3 storage reads with apsw: a database corrupt in the middle raises its errors
        storage_errors = (apsw.Error, sqlite3.Error)
    except ImportError:
        storage_errors = (sqlite3.Error,)
    try:
        yield
    except (AnyReaderError, Ros1Error, Ros2Error, SerdeError, TypesysError, OSError, UnicodeDecodeError,
            ValueError, *storage_errors) as e:  # a garbled ROS 1 header decodes badly before rosbags can say so
        reason = ' '.join(str(e).split()) or type(e).__name__
        raise SourceError(f'{path}: cannot read this bag ({reason}); it is incomplete, corrupt or not a '
                          'ROS bag') from None


@contextmanager
def open_bag(path: Path, paths: list[Path]):
    """rosbags' AnyReader over the bag's paths, opened; the ROS 2 Jazzy definitions serve bags that
    store none (rosbag2 before Iron)."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore
    with bag_errors(path):
        reader = AnyReader(paths, default_typestore=get_typestore(Stores.ROS2_JAZZY))
        reader.open()
    try:
        yield reader
    finally:
        reader.close()


def bag_paths(path: Path) -> list[Path]:
    """What rosbags opens for a bag spec: [rosbag2 directory], [one .db3 / .mcap file] or [.bag files]."""
    if path.is_file() or (path / 'metadata.yaml').is_file():
        return [path]
    files = sorted((p for p in path.iterdir() if p.suffix in BAG_SUFFIXES), key=natural_key)
    if not files:
        raise SourceError(f'{path}: no bag files ({", ".join(BAG_SUFFIXES)}) and no metadata.yaml in this directory')
    ros1 = [f for f in files if f.suffix == ROS1_SUFFIX]
    if ros1:
        if len(ros1) < len(files):
            raise SourceError(f'{path} mixes ROS 1 and ROS 2 bag files: {[f.name for f in files]}')
        return ros1
    if len(files) > 1:
        raise SourceError(f'{path} holds several rosbag2 storage files ({[f.name for f in files]}) but no '
                          'metadata.yaml that orders them: give one file, or restore metadata.yaml '
                          '(ros2 bag reindex)')
    return files


def open_source(spec, topic: str | None = None, rate_hz: float = DEFAULT_RATE_HZ) -> Source:
    """The source behind spec (a path, see the module doc); SourceError when it cannot be read.

    topic: image topic of a bag (needed when it has several); rate_hz: stamps of sources without
    any (folders of plainly named images, videos that do not tell their frame rate)."""
    path = Path(spec).expanduser()
    if not rate_hz > 0:
        raise ValueError(f'rate_hz must be > 0, got {rate_hz}')
    if not path.exists():
        raise SourceError(f'source {path} does not exist: give an image folder, a video file, a ROS 2 bag '
                          f'(directory, .db3 or .mcap), a ROS 1 bag (.bag) or a synthetic sequence directory')
    is_bag = path.suffix in BAG_SUFFIXES or (path.is_dir() and not (path / SEQUENCE_FILE).is_file() and (
        (path / 'metadata.yaml').is_file() or any(p.suffix in BAG_SUFFIXES for p in path.iterdir())))
    if topic is not None and not is_bag:
        raise SourceError(f'a topic ({topic}) applies to ROS bags only, and {path} is not one')
    if is_bag:
        return BagSource(path, topic)
    if path.is_dir():
        return SyntheticSource(path) if (path / SEQUENCE_FILE).is_file() else FolderSource(path, rate_hz)
    return VideoSource(path, rate_hz)
