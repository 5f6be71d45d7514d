"""Image sources: folders (timestamp names and plain names), videos, ROS bags written with rosbags'
writers (rosbag2 sqlite3 / MCAP, zstd-compressed, ROS 1), synthetic sequences, and the errors for what
cannot be read."""
import cv2
import numpy as np
import pytest

from superglue_ros.demo.publisher import frames_to_publish
from superglue_ros.demo.sources import (BagSource, FolderSource, SourceError, SyntheticSource, VideoSource,
                                        open_source)
from superglue_ros.demo.synthetic import generate_sequence


def pattern(index: int, size=(64, 48)) -> np.ndarray:
    """A distinct bgr8 test frame: coloured gradient plus a square whose place encodes the index."""
    width, height = size
    x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    image = np.stack([x, y, np.full_like(x, 40 * index % 256)], axis=-1).astype(np.uint8)
    cv2.rectangle(image, (4 + 6 * index, 10), (14 + 6 * index, 20), (255, 255, 255), -1)
    return image


def test_freiburg_folder_uses_file_names_as_stamps(freiburg_paths):
    source = open_source(freiburg_paths[0].parent)
    assert isinstance(source, FolderSource) and len(source) == len(freiburg_paths) == 17
    assert source.camera_info is None and source.sequence is None
    frames = list(source)
    assert [stamp for stamp, _ in frames] == [float(p.stem) for p in freiburg_paths]
    first = frames[0][1]
    assert first.shape == (480, 640, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, cv2.imread(str(freiburg_paths[0])))


def test_plain_names_sort_naturally_and_get_rate_stamps(tmp_path):
    for index in (10, 2, 1):
        cv2.imwrite(str(tmp_path / f'frame{index}.png'), pattern(index))
    cv2.imwrite(str(tmp_path / 'frame3.jpg'), pattern(3))
    (tmp_path / 'notes.txt').write_text('not an image')
    source = open_source(tmp_path, rate_hz=4.0)
    assert [f.name for f in source.files] == ['frame1.png', 'frame2.png', 'frame3.jpg', 'frame10.png']
    frames = list(source)
    assert [stamp for stamp, _ in frames] == [0.0, 0.25, 0.5, 0.75]
    np.testing.assert_array_equal(frames[3][1], pattern(10))


def test_grey_images_come_out_bgr(tmp_path):
    grey = cv2.cvtColor(pattern(1), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / '0.png'), grey)
    (_, image), = list(open_source(tmp_path))
    assert image.shape == (48, 64, 3)
    np.testing.assert_array_equal(image[..., 1], grey)


def test_video_frames_and_stamps(tmp_path):
    path = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 7.0, (64, 48))
    assert writer.isOpened(), 'OpenCV cannot write MJPG .avi here'
    for index in range(5):
        writer.write(pattern(index))
    writer.release()

    source = open_source(path)
    assert isinstance(source, VideoSource) and len(source) == 5
    frames = list(source)
    assert len(frames) == 5
    assert [stamp for stamp, _ in frames] == pytest.approx([i / 7.0 for i in range(5)])
    for index, (_, image) in enumerate(frames):  # JPEG is lossy: each frame closest to its original
        errors = [np.abs(image.astype(int) - pattern(j)).mean() for j in range(5)]
        assert int(np.argmin(errors)) == index and errors[index] < 8


# -- ROS bags, written with rosbags' writers ------------------------------------------------------

def typestore(ros1: bool = False):
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_JAZZY)


def camera_records(count: int = 3, compressed_topic: bool = False, ros1: bool = False):
    """[(topic, type, recording time ns, message)] of a small recording: an unrelated topic, camera_info,
    rgb8 images (converted back to bgr by the source) and optionally a PNG CompressedImage topic whose
    header stamps are zero (the recording time is used)."""
    types = typestore(ros1).types

    def header(stamp_ns):
        stamp = types['builtin_interfaces/msg/Time'](*divmod(stamp_ns, 10 ** 9))
        extra = {'seq': 0} if ros1 else {}  # ROS 1 headers have a sequence number
        return types['std_msgs/msg/Header'](**extra, stamp=stamp, frame_id='camera')

    matrices = dict(d=np.array([0.1, 0, 0, 0, 0]), k=np.array([50.0, 0, 31.5, 0, 50.0, 23.5, 0, 0, 1]),
                    r=np.eye(3).ravel(), p=np.zeros(12))
    roi = types['sensor_msgs/msg/RegionOfInterest'](0, 0, 0, 0, False)
    info = types['sensor_msgs/msg/CameraInfo'](
        header(1_000_000_000), 48, 64, 'plumb_bob', *matrices.values(), 0, 0, roi)
    records = [('/chatter', 'std_msgs/msg/String', 500, types['std_msgs/msg/String']('hello')),
               ('/cam/camera_info', 'sensor_msgs/msg/CameraInfo', 900, info)]
    for index in range(count):
        rgb = cv2.cvtColor(pattern(index), cv2.COLOR_BGR2RGB)
        image = types['sensor_msgs/msg/Image'](header(1_000_000_000 + index * 200_000_000), 48, 64, 'rgb8', 0, 64 * 3,
                                                rgb.ravel())
        records.append(('/cam/image_raw', 'sensor_msgs/msg/Image', 2000 + index, image))
        if compressed_topic:
            png = cv2.imencode('.png', pattern(index))[1].ravel()
            records.append(('/cam/image_raw/compressed', 'sensor_msgs/msg/CompressedImage', 2000 + index,
                            types['sensor_msgs/msg/CompressedImage'](header(0), 'png', png)))
    return records


def write_ros2_bag(path, records, storage='sqlite3', compression=None):
    """A rosbag2 directory written by rosbags (version 9, as Jazzy), optionally zstd-compressed
    ('file' or 'message'). A message given as bytes is written as it is."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
    store = typestore()
    writer = Writer(path, version=9, storage_plugin=StoragePlugin[storage.upper()])
    if compression:
        writer.set_compression(CompressionMode[compression.upper()], CompressionFormat.ZSTD)
    with writer:
        connections = {}
        for topic, type_, time_ns, message in records:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, type_, typestore=store)
            data = message if isinstance(message, bytes) else store.serialize_cdr(message, type_)
            writer.write(connections[topic], time_ns, data)
    return path


def write_ros1_bag(path, records):
    from rosbags.rosbag1 import Writer
    store = typestore(ros1=True)
    with Writer(path) as writer:
        connections = {}
        for topic, type_, time_ns, message in records:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, type_, typestore=store)
            writer.write(connections[topic], time_ns, store.serialize_ros1(message, type_))
    return path


def check_camera_bag(source, count, kind='ROS 2 bag'):
    assert isinstance(source, BagSource) and source.kind == kind
    assert source.topic == '/cam/image_raw' and len(source) == count
    frames = list(source)
    assert [stamp for stamp, _ in frames] == pytest.approx([1.0 + 0.2 * i for i in range(count)])
    for index, (_, image) in enumerate(frames):
        np.testing.assert_array_equal(image, pattern(index))
    info = source.camera_info
    assert (info['width'], info['height'], info['distortion_model']) == (64, 48, 'plumb_bob')
    assert info['k'] == pytest.approx([50.0, 0, 31.5, 0, 50.0, 23.5, 0, 0, 1])
    assert info['d'] == pytest.approx([0.1, 0, 0, 0, 0]) and info['r'] == pytest.approx(np.eye(3).ravel())


@pytest.mark.parametrize('storage, compression', [('sqlite3', None), ('mcap', None), ('sqlite3', 'file'),
                                                  ('mcap', 'message')])
def test_ros2_bag(tmp_path, storage, compression):
    """sqlite3 and MCAP storage, plain and zstd-compressed (refused before rosbags)."""
    bag = write_ros2_bag(tmp_path / 'recording', camera_records(3), storage, compression)
    if compression == 'file':
        assert [p.suffix for p in bag.iterdir() if p.name != 'metadata.yaml'] == ['.zstd']
    check_camera_bag(open_source(bag), 3)
    if not compression:  # the storage file alone, without metadata.yaml
        storage_file, = [p for p in bag.iterdir() if p.suffix in ('.db3', '.mcap')]
        check_camera_bag(open_source(storage_file), 3)


def test_ros1_bag(tmp_path):
    """A ROS 1 bag: stamps from the headers, CameraInfo's D, K, R, P read as d, k, r, p."""
    path = write_ros1_bag(tmp_path / 'recording.bag', camera_records(3, ros1=True))
    check_camera_bag(open_source(path), 3, kind='ROS 1 bag')
    check_camera_bag(open_source(tmp_path), 3, kind='ROS 1 bag')  # a directory of .bag files


def test_bag_with_several_image_topics_needs_a_topic(tmp_path):
    bag = write_ros2_bag(tmp_path / 'two_cameras', camera_records(2, compressed_topic=True))
    with pytest.raises(SourceError, match='several image topics.*/cam/image_raw/compressed.*--topic'):
        open_source(bag)
    check_camera_bag(open_source(bag, topic='/cam/image_raw'), 2)
    compressed = open_source(bag, topic='/cam/image_raw/compressed')
    frames = list(compressed)
    assert [stamp for stamp, _ in frames] == pytest.approx([2000e-9, 2001e-9])  # zero header stamps
    np.testing.assert_array_equal(frames[1][1], pattern(1))
    with pytest.raises(SourceError, match="'/chatter' is not an image topic.*/cam/camera_info"):
        open_source(bag, topic='/chatter')


def test_broken_bags_are_refused(tmp_path):
    broken = tmp_path / 'broken.db3'
    broken.write_bytes(b'this is not sqlite' * 100)
    with pytest.raises(SourceError, match='broken.db3: cannot read this bag'):
        open_source(broken)
    (tmp_path / 'broken.bag').write_bytes(b'#ROSBAG V2.0\n' + b'\0' * 50)
    with pytest.raises(SourceError, match='broken.bag: cannot read this bag'):
        open_source(tmp_path / 'broken.bag')
    bag = write_ros2_bag(tmp_path / 'truncated', camera_records(2), 'mcap')
    storage_file, = bag.glob('*.mcap')
    storage_file.write_bytes(storage_file.read_bytes()[:300])
    with pytest.raises(SourceError, match='truncated: cannot read this bag'):
        list(open_source(bag))
    corrupt = write_ros2_bag(tmp_path / 'corrupt', [r for r in camera_records(40) if r[0] == '/cam/image_raw'])
    storage_file, = corrupt.glob('*.db3')
    data = bytearray(storage_file.read_bytes())
    page = int(len(data) * 0.7) // 4096 * 4096
    data[page:page + 4096] = b'\xff' * 4096  # a sqlite page garbled: it opens, then reading fails (apsw's error)
    storage_file.write_bytes(bytes(data))
    frames = iter(open_source(corrupt))
    with pytest.raises(SourceError, match=r'corrupt: cannot read this bag \(database disk image is malformed\)'):
        list(frames)
    missing = write_ros2_bag(tmp_path / 'missing', camera_records(1))
    next(missing.glob('*.db3')).unlink()
    with pytest.raises(SourceError, match='missing: cannot read this bag'):
        open_source(missing)


def check_skips(source, expected: list[int], reason: str):
    """Every frame but those at `expected` comes out, with its source index; the bad ones are reported."""
    reported = []
    source.on_skip = lambda index, why: reported.append(index)
    frames = list(frames_to_publish(source, loop=False, max_frames=None))
    good = [i for i in range(len(source)) if i not in expected]
    assert [index for index, _, _ in frames] == good and reported == expected
    for index, _, image in frames:
        np.testing.assert_array_equal(image, pattern(index))
    assert [index for index, _ in source.skipped] == expected
    assert all(reason in why for _, why in source.skipped), source.skipped


def test_undecodable_frames_are_skipped_and_the_rest_still_come(tmp_path):
    """A corrupt file in a folder, a garbled message, an undecodable CompressedImage and a raw image
    with a bad encoding are each skipped with a reason; the frames after them still come out."""
    folder = tmp_path / 'folder'
    folder.mkdir()
    for index in range(4):
        cv2.imwrite(str(folder / f'frame{index}.png'), pattern(index))
    (folder / 'frame1.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 40)  # truncated
    check_skips(open_source(folder), [1], 'frame1.png as an image')

    records = [r for r in camera_records(4) if r[0] == '/cam/image_raw']
    records[1] = records[1][:3] + (b'\0\1\0\0garbage',)  # not CDR of an Image
    check_skips(open_source(write_ros2_bag(tmp_path / 'garbled', records)), [1], 'garbled message')

    types = typestore().types
    header = types['std_msgs/msg/Header'](types['builtin_interfaces/msg/Time'](1, 0), 'camera')
    records = [('/cam/image_raw/compressed', 'sensor_msgs/msg/CompressedImage', 1000 + i,
                types['sensor_msgs/msg/CompressedImage'](header, 'png', cv2.imencode('.png', pattern(i))[1].ravel()))
               for i in range(4)]
    records[2] = records[2][:3] + (types['sensor_msgs/msg/CompressedImage'](header, 'png', np.arange(9, dtype=np.uint8)),)
    check_skips(open_source(write_ros2_bag(tmp_path / 'compressed', records, 'mcap')), [2], "cannot decode a 'png'")

    records = [r for r in camera_records(3) if r[0] == '/cam/image_raw']
    records[0][3].encoding = 'yuv9000'
    check_skips(open_source(write_ros2_bag(tmp_path / 'encoding', records)), [0], 'unusable image')


def test_synthetic_directory(tmp_path):
    generate_sequence(tmp_path, num_frames=3, size=(96, 64), rate_hz=5.0)
    source = open_source(tmp_path)
    assert isinstance(source, SyntheticSource) and len(source) == 3
    assert source.camera_info['width'] == 96 and source.sequence.homographies.shape == (3, 3, 3)
    stamps = [stamp for stamp, _ in source]
    assert np.diff(stamps) == pytest.approx([0.2, 0.2])


def test_unusable_sources(tmp_path):
    with pytest.raises(SourceError, match='does not exist'):
        open_source(tmp_path / 'missing')
    with pytest.raises(SourceError, match='holds no images'):
        open_source(tmp_path)
    (tmp_path / 'clip.avi').write_bytes(b'not a video')
    with pytest.raises(SourceError, match='cannot read .*clip.avi'):
        open_source(tmp_path / 'clip.avi')
    (tmp_path / '0.png').write_bytes(b'not a png')
    only_bad = open_source(tmp_path)
    reason = f'cannot read {tmp_path / "0.png"} as an image (corrupt, or a format OpenCV does not read)'
    assert list(only_bad) == [] and only_bad.skipped == [(0, reason)]
    with pytest.raises(SourceError, match='applies to ROS bags only'):
        open_source(tmp_path, topic='/image')


def test_a_file_opencv_cannot_decode_and_a_garbled_ros1_bag_are_refused_naming_them(tmp_path):
    text = tmp_path / 'text.png'
    text.write_text('hello')                      # OpenCV "opens" it as a one-frame video, then cannot decode it
    with pytest.raises(SourceError, match=f'cannot read {text}'):
        open_source(text)
    bag = tmp_path / 'garbled.bag'
    bag.write_bytes(bytes(range(256)) * 20)       # not UTF-8 where the ROS 1 header is
    with pytest.raises(SourceError, match=f'{bag}: cannot read this bag'):
        list(open_source(bag))
