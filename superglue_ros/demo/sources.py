"""Image sources for the publisher and the demo: each iterates (stamp in s, bgr8 image [H, W, 3]).

open_source(spec) picks the kind from what spec is:
    synthetic sequence   directory with sequence.json (synthetic.py): its stamps, camera_info and
                         ground-truth homographies
    ROS 2 bag            directory with metadata.yaml / *.db3 / *.mcap, or one .db3 / .mcap file:
                         sensor_msgs/Image or CompressedImage messages, stamps from their headers
                         (the recording time where a header stamp is zero), camera_info from a
                         sensor_msgs/CameraInfo topic if the bag has one
    image folder         files sorted by name (digits compared as numbers); when every name is a
                         number of seconds (the TUM RGB-D / freiburg layout, 1341847980.722988.png)
                         those are the stamps, otherwise frame i has stamp i / rate_hz
    video file           anything cv2.VideoCapture reads; frame i has stamp i / (the file's frame rate)

Bags are read without rosbag2_py (not on PyPI): .db3 with sqlite3, .mcap with the `mcap` package
(pip install mcap) when it is installed; messages are decoded with rclpy.serialization. Compressed
bags (rosbag2 compression) are refused with the command that decompresses them.
camera_info is a dict with the sensor_msgs/CameraInfo field names (width, height,
distortion_model, d, k, r, p), or None when the source has no calibration.
"""
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import cv2
import numpy as np

from ..image import ImageError, to_bgr8
from .synthetic import SEQUENCE_FILE, load_sequence

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.ppm', '.pgm', '.pnm', '.webp')
BAG_SUFFIXES = ('.db3', '.mcap')
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
DEFAULT_RATE_HZ = 10.0
TIMESTAMP_NAME = re.compile(r'\d+(\.\d+)?')


class SourceError(ValueError):
    """A source that cannot be read; the message says which file and why."""


def natural_key(path: Path):
    """'frame2' < 'frame10': digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', path.name)]


class Source:
    """Base of the sources: iterate for (stamp, image); len() is the number of frames."""
    kind = ''
    camera_info: dict | None = None
    sequence = None  # synthetic.Sequence with the ground truth, synthetic sources only

    def __init__(self, path: Path):
        self.path = path

    def describe(self) -> str:
        return f'{self.kind} {self.path} ({len(self)} frames)'


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

    def __iter__(self):
        for i, stamp in enumerate(self.sequence.stamps):
            yield float(stamp), self.sequence.image(i)


class FolderSource(Source):
    kind = 'image folder'

    def __init__(self, path: Path, rate_hz: float = DEFAULT_RATE_HZ):
        super().__init__(path)
        files = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        if not files:
            raise SourceError(f'{path} holds no images ({", ".join(IMAGE_SUFFIXES)}) and is neither a synthetic '
                              f'sequence ({SEQUENCE_FILE}) nor a ROS 2 bag (metadata.yaml, *.db3, *.mcap)')
        if all(TIMESTAMP_NAME.fullmatch(p.stem) for p in files):  # names are the capture times
            self.files = sorted(files, key=lambda p: float(p.stem))
            self.stamps = [float(p.stem) for p in self.files]
        else:
            self.files = sorted(files, key=natural_key)
            self.stamps = [i / rate_hz for i in range(len(self.files))]

    def __len__(self):
        return len(self.files)

    def __iter__(self):
        for stamp, file in zip(self.stamps, self.files):
            image = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if image is None:
                raise SourceError(f'cannot read {file} as an image (corrupt, or a format OpenCV does not read)')
            yield stamp, image


class VideoSource(Source):
    kind = 'video'

    def __init__(self, path: Path, rate_hz: float = DEFAULT_RATE_HZ):
        super().__init__(path)
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise SourceError(f'cannot open {path}: not an image folder, a ROS 2 bag ({", ".join(BAG_SUFFIXES)}) '
                              f'or a video file OpenCV can read')
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps > 0 else rate_hz  # some containers do not tell their frame rate
        self.frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()

    def __len__(self):
        return max(self.frame_count, 0)  # as the container tells it

    def __iter__(self):
        capture = cv2.VideoCapture(str(self.path))
        try:
            index = 0
            while True:
                ok, image = capture.read()
                if not ok:
                    return
                yield index / self.fps, image
                index += 1
        finally:
            capture.release()


class BagSource(Source):
    """A rosbag2 recording: .db3 (sqlite3) or .mcap files, read in order."""
    kind = 'ROS 2 bag'

    def __init__(self, path: Path, topic: str | None = None):
        super().__init__(path)
        self.files = bag_files(path)
        types = self._topic_types()
        images = sorted(name for name, type_ in types.items() if type_ in IMAGE_TYPES)
        listing = ', '.join(f'{name} ({type_})' for name, type_ in sorted(types.items())) or 'none'
        if topic is not None:
            if types.get(topic) not in IMAGE_TYPES:
                raise SourceError(f'{path}: topic {topic!r} is not an image topic of this bag; its topics: {listing}')
        elif len(images) != 1:
            raise SourceError(f'{path}: {"no" if not images else "several"} image topics '
                              f'({", ".join(IMAGE_TYPES)}); its topics: {listing}'
                              + ('; choose one with --topic' if images else ''))
        self.topic = topic or images[0]
        self.image_type = types[self.topic]
        self.camera_info = self._first_camera_info(types)
        self._length = sum(message_count(file, self.topic) for file in self.files)

    def describe(self) -> str:
        return f'{self.kind} {self.path}, topic {self.topic} ({len(self)} frames)'

    def __len__(self):
        return self._length

    def __iter__(self):
        for _, time_ns, message in self._records([self.topic]):
            stamp = message.header.stamp.sec + message.header.stamp.nanosec * 1e-9
            yield (stamp if stamp > 0 else time_ns * 1e-9), self._to_bgr(message)

    def _to_bgr(self, message) -> np.ndarray:
        if self.image_type == 'sensor_msgs/msg/CompressedImage':
            image = cv2.imdecode(np.frombuffer(bytes(message.data), np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise SourceError(f'{self.path}: cannot decode a {message.format!r} image on {self.topic}')
            return image
        from ..ros.image_conversion import ImageConversionError, image_msg_to_numpy
        try:
            return to_bgr8(*image_msg_to_numpy(message))
        except (ImageConversionError, ImageError) as e:
            raise SourceError(f'{self.path}: unusable image on {self.topic}: {e}') from None

    def _first_camera_info(self, types: dict) -> dict | None:
        """The first CameraInfo of the camera: the topic next to the image topic, else the only one."""
        infos = [name for name, type_ in types.items() if type_ == CAMERA_INFO_TYPE]
        namespace = self.topic.rsplit('/', 1)[0]
        nearby = [name for name in infos if name.rsplit('/', 1)[0] == namespace]
        chosen = nearby if len(nearby) == 1 else infos
        if len(chosen) != 1:
            return None
        for _, _, info in self._records(chosen):
            return {'width': info.width, 'height': info.height, 'distortion_model': info.distortion_model,
                    'd': list(info.d), 'k': list(info.k), 'r': list(info.r), 'p': list(info.p)}
        return None

    def _topic_types(self) -> dict:
        types = {}
        for file in self.files:
            types.update(topic_types(file))
        return types

    def _records(self, topics: list[str]):
        """(topic, recording time ns, decoded message) in recording order."""
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        classes = {'sensor_msgs/msg/Image': Image, 'sensor_msgs/msg/CompressedImage': CompressedImage,
                   CAMERA_INFO_TYPE: CameraInfo}
        for file in self.files:
            for topic, type_, time_ns, data in read_raw(file, topics):
                try:
                    message = deserialize_message(bytes(data), classes[type_])
                except Exception as e:  # rclpy raises plain exceptions for bad CDR
                    raise SourceError(f'{file}: cannot decode a {type_} message on {topic} ({e}); '
                                      'the bag is corrupt or compressed') from None
                yield topic, time_ns, message


def bag_files(path: Path) -> list[Path]:
    """The storage files of a bag, in order; SourceError for compressed or mixed bags."""
    if path.is_file():
        return [path]
    metadata = path / 'metadata.yaml'
    files = None
    if metadata.is_file():
        import yaml
        try:
            info = yaml.safe_load(metadata.read_text())['rosbag2_bagfile_information']
        except (yaml.YAMLError, KeyError, TypeError) as e:
            raise SourceError(f'{metadata} is not a rosbag2 metadata file ({e})') from None
        if info.get('compression_format'):
            raise SourceError(f'{path} is compressed ({info["compression_format"]}, {info.get("compression_mode")}); '
                              f'decompress it first: ros2 bag decompress {path}')
        files = [path / name for name in info.get('relative_file_paths', [])]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise SourceError(f'{metadata} lists files that do not exist: {missing}')
    if not files:
        files = sorted((p for p in path.iterdir() if p.suffix in BAG_SUFFIXES), key=natural_key)
    if not files:
        raise SourceError(f'{path}: no bag files (*.db3, *.mcap) in this directory')
    if len({f.suffix for f in files}) > 1:
        raise SourceError(f'{path} mixes storage formats: {[f.name for f in files]}')
    return files


def open_db3(file: Path) -> sqlite3.Connection:
    """Read-only connection to a rosbag2 sqlite3 file (close it: contextlib.closing)."""
    try:
        db = sqlite3.connect(f'file:{file}?mode=ro', uri=True)
        db.execute('SELECT id, name, type FROM topics LIMIT 1').fetchall()
        db.execute('SELECT topic_id, timestamp, data FROM messages LIMIT 1').fetchall()
    except sqlite3.Error as e:
        raise SourceError(f'{file} is not a rosbag2 sqlite3 bag ({e})') from None
    return db


def mcap_reader(stream, file: Path):
    try:
        from mcap.reader import make_reader
    except ImportError:
        raise SourceError(f'{file} is an MCAP bag: reading it needs the mcap package (pip install mcap), or convert '
                          'it to sqlite3 with `ros2 bag convert`') from None
    try:
        return make_reader(stream)
    except Exception as e:  # the mcap package raises its own hierarchy plus struct errors
        raise SourceError(f'{file} is not a readable MCAP file ({type(e).__name__}: {e})') from None


def topic_types(file: Path) -> dict:
    """Topic name -> message type of one bag file."""
    if file.suffix == '.db3':
        with closing(open_db3(file)) as db:
            return dict(db.execute('SELECT name, type FROM topics').fetchall())
    with open(file, 'rb') as stream:
        summary = mcap_reader(stream, file).get_summary()
        if summary is not None:
            return {channel.topic: summary.schemas[channel.schema_id].name
                    for channel in summary.channels.values() if channel.schema_id in summary.schemas}
        stream.seek(0)  # no summary section: scan the records
        return {channel.topic: schema.name for schema, channel, _ in mcap_reader(stream, file).iter_messages()
                if schema is not None}


def message_count(file: Path, topic: str) -> int:
    if file.suffix == '.db3':
        with closing(open_db3(file)) as db:
            return db.execute('SELECT COUNT(*) FROM messages JOIN topics ON messages.topic_id = topics.id '
                              'WHERE topics.name = ?', (topic,)).fetchone()[0]
    with open(file, 'rb') as stream:
        summary = mcap_reader(stream, file).get_summary()
        if summary is not None and summary.statistics is not None:
            return sum(summary.statistics.channel_message_counts.get(channel_id, 0)
                       for channel_id, channel in summary.channels.items() if channel.topic == topic)
    return sum(1 for _ in read_raw(file, [topic]))


def read_raw(file: Path, topics: list[str]):
    """(topic, type, recording time ns, serialised CDR data) of one bag file, in recording order."""
    if file.suffix == '.db3':
        marks = ', '.join('?' * len(topics))
        with closing(open_db3(file)) as db:
            yield from db.execute(
                'SELECT topics.name, topics.type, messages.timestamp, messages.data FROM messages '
                f'JOIN topics ON messages.topic_id = topics.id WHERE topics.name IN ({marks}) '
                'ORDER BY messages.timestamp, messages.id', topics)
        return
    with open(file, 'rb') as stream:
        for schema, channel, message in mcap_reader(stream, file).iter_messages(topics=topics):
            if channel.message_encoding != 'cdr':
                raise SourceError(f'{file}: topic {channel.topic} is encoded as {channel.message_encoding!r}; '
                                  "only ROS 2 'cdr' messages are read")
            yield channel.topic, schema.name, message.log_time, message.data


def open_source(spec, topic: str | None = None, rate_hz: float = DEFAULT_RATE_HZ) -> Source:
    """The source behind spec (a path, see the module doc); SourceError when it cannot be read.

    topic: image topic of a bag (needed when it has several); rate_hz: stamps of sources without
    any (folders of plainly named images, videos that do not tell their frame rate)."""
    path = Path(spec).expanduser()
    if not rate_hz > 0:
        raise ValueError(f'rate_hz must be > 0, got {rate_hz}')
    if not path.exists():
        raise SourceError(f'source {path} does not exist: give an image folder, a video file, a ROS 2 bag '
                          f'(directory, .db3 or .mcap) or a synthetic sequence directory')
    is_bag = path.suffix in BAG_SUFFIXES or (path.is_dir() and not (path / SEQUENCE_FILE).is_file() and (
        (path / 'metadata.yaml').is_file() or any(p.suffix in BAG_SUFFIXES for p in path.iterdir())))
    if topic is not None and not is_bag:
        raise SourceError(f'a topic ({topic}) applies to ROS 2 bags only, and {path} is not one')
    if is_bag:
        return BagSource(path, topic)
    if path.is_dir():
        return SyntheticSource(path) if (path / SEQUENCE_FILE).is_file() else FolderSource(path, rate_hz)
    return VideoSource(path, rate_hz)
