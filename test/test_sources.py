"""Image sources: folders (timestamp names and plain names), videos, rosbag2 sqlite3 / MCAP bags,
synthetic sequences, and the errors for what cannot be read."""
import sqlite3

import cv2
import numpy as np
import pytest

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


# -- ROS 2 bags ---------------------------------------------------------------------------------

def ros_messages():
    """(topic, type, message class) of a camera bag: raw images, camera_info and an unrelated topic."""
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: F401
    from std_msgs.msg import String  # noqa: F401
    return {'Image': Image, 'CameraInfo': CameraInfo, 'CompressedImage': CompressedImage, 'String': String}


def stamped(message, stamp_ns: int):
    message.header.stamp.sec, message.header.stamp.nanosec = divmod(stamp_ns, 10 ** 9)
    return message


def camera_records(count: int = 3, compressed_topic: bool = False):
    """[(topic, type name, recording time ns, message)] of a small recording."""
    from superglue_ros.ros.image_conversion import numpy_to_image_msg
    msg = ros_messages()
    records = [('/chatter', 'std_msgs/msg/String', 500, msg['String'](data='hello'))]
    info = msg['CameraInfo'](width=64, height=48, distortion_model='plumb_bob', d=[0.1, 0, 0, 0, 0],
                             k=[50.0, 0, 31.5, 0, 50.0, 23.5, 0, 0, 1])
    records.append(('/cam/camera_info', 'sensor_msgs/msg/CameraInfo', 900, stamped(info, 1_000_000_000)))
    for index in range(count):
        stamp = 1_000_000_000 + index * 200_000_000
        rgb = cv2.cvtColor(pattern(index), cv2.COLOR_BGR2RGB)  # rgb8 on the wire: converted back to bgr
        records.append(('/cam/image_raw', 'sensor_msgs/msg/Image', 2000 + index,
                        stamped(numpy_to_image_msg(rgb, 'rgb8'), stamp)))
        if compressed_topic:
            png = msg['CompressedImage'](format='png', data=cv2.imencode('.png', pattern(index))[1].tobytes())
            records.append(('/cam/image_raw/compressed', 'sensor_msgs/msg/CompressedImage', 2000 + index,
                            stamped(png, 0)))  # zero stamp: the recording time is used
    return records


def write_db3(path, records):
    """A rosbag2 sqlite3 file with the schema of Jazzy's storage plugin (schema version 4)."""
    from rclpy.serialization import serialize_message
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE schema(schema_version INTEGER PRIMARY KEY, ros_distro TEXT NOT NULL);
        CREATE TABLE metadata(id INTEGER PRIMARY KEY, metadata_version INTEGER NOT NULL, metadata TEXT NOT NULL);
        CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
                            serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL,
                            type_description_hash TEXT NOT NULL);
        CREATE TABLE message_definitions(id INTEGER PRIMARY KEY, topic_type TEXT NOT NULL, encoding TEXT NOT NULL,
                                         encoded_message_definition TEXT NOT NULL,
                                         type_description_hash TEXT NOT NULL);
        CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, timestamp INTEGER NOT NULL,
                              data BLOB NOT NULL);
        CREATE INDEX timestamp_idx ON messages (timestamp ASC);
        INSERT INTO schema VALUES (4, 'jazzy');
    """)
    topic_ids = {}
    for topic, type_, _, _ in records:
        if topic not in topic_ids:
            cursor = db.execute('INSERT INTO topics (name, type, serialization_format, offered_qos_profiles, '
                                "type_description_hash) VALUES (?, ?, 'cdr', '', '')", (topic, type_))
            topic_ids[topic] = cursor.lastrowid
    for topic, _, time_ns, message in reversed(records):  # stored out of order: the reader sorts by time
        db.execute('INSERT INTO messages (topic_id, timestamp, data) VALUES (?, ?, ?)',
                   (topic_ids[topic], time_ns, serialize_message(message)))
    db.commit()
    db.close()


def check_camera_bag(source, count):
    assert isinstance(source, BagSource) and source.topic == '/cam/image_raw' and len(source) == count
    frames = list(source)
    assert [stamp for stamp, _ in frames] == pytest.approx([1.0 + 0.2 * i for i in range(count)])
    for index, (_, image) in enumerate(frames):
        np.testing.assert_array_equal(image, pattern(index))
    info = source.camera_info
    assert (info['width'], info['height'], info['distortion_model']) == (64, 48, 'plumb_bob')
    assert info['k'] == pytest.approx([50.0, 0, 31.5, 0, 50.0, 23.5, 0, 0, 1])


def test_db3_bag_directory_with_metadata(tmp_path):
    bag = tmp_path / 'recording'
    bag.mkdir()
    write_db3(bag / 'recording_0.db3', camera_records(3))
    (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information:\n  version: 9\n  storage_identifier: sqlite3\n'
                                       '  relative_file_paths: [recording_0.db3]\n  compression_format: ""\n')
    check_camera_bag(open_source(bag), 3)
    check_camera_bag(open_source(bag / 'recording_0.db3'), 3)  # the file alone


def test_bag_with_several_image_topics_needs_a_topic(tmp_path):
    path = tmp_path / 'two_cameras.db3'
    write_db3(path, camera_records(2, compressed_topic=True))
    with pytest.raises(SourceError, match='several image topics.*/cam/image_raw/compressed.*--topic'):
        open_source(path)
    check_camera_bag(open_source(path, topic='/cam/image_raw'), 2)
    compressed = open_source(path, topic='/cam/image_raw/compressed')
    frames = list(compressed)
    assert [stamp for stamp, _ in frames] == pytest.approx([2000e-9, 2001e-9])  # zero header stamps
    np.testing.assert_array_equal(frames[1][1], pattern(1))
    with pytest.raises(SourceError, match="'/chatter' is not an image topic.*/cam/camera_info"):
        open_source(path, topic='/chatter')


def test_mcap_bag(tmp_path):
    pytest.importorskip('mcap', reason='the optional mcap package reads MCAP bags')
    from mcap.writer import Writer
    from rclpy.serialization import serialize_message
    path = tmp_path / 'recording_0.mcap'
    with open(path, 'wb') as stream:
        writer = Writer(stream)
        writer.start(profile='ros2')
        channels = {}
        for topic, type_, time_ns, message in camera_records(3):
            if topic not in channels:
                schema = writer.register_schema(name=type_, encoding='ros2msg', data=b'')
                channels[topic] = writer.register_channel(topic=topic, message_encoding='cdr', schema_id=schema)
            writer.add_message(channels[topic], log_time=time_ns, data=serialize_message(message),
                               publish_time=time_ns)
        writer.finish()
    check_camera_bag(open_source(tmp_path), 3)


def test_compressed_and_broken_bags_are_refused(tmp_path):
    bag = tmp_path / 'compressed'
    bag.mkdir()
    (bag / 'compressed_0.db3.zstd').write_bytes(b'')
    (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information:\n  relative_file_paths: [compressed_0.db3.zstd]\n'
                                       '  compression_format: zstd\n  compression_mode: FILE\n')
    with pytest.raises(SourceError, match='compressed.*ros2 bag decompress'):
        open_source(bag)
    broken = tmp_path / 'broken.db3'
    broken.write_bytes(b'this is not sqlite' * 100)
    with pytest.raises(SourceError, match='not a rosbag2 sqlite3 bag'):
        open_source(broken)


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
    with pytest.raises(SourceError, match='cannot open .*clip.avi'):
        open_source(tmp_path / 'clip.avi')
    (tmp_path / '0.png').write_bytes(b'not a png')
    with pytest.raises(SourceError, match='cannot read .*0.png'):
        list(open_source(tmp_path))
    with pytest.raises(SourceError, match='applies to ROS 2 bags only'):
        open_source(tmp_path, topic='/image')
