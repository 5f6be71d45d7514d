"""The demo end to end (node and publisher processes over DDS, random weights, 640x480 frames from a
reliable publisher, raw and JPEG-compressed, a bag corrupt in the middle), its refusal to start without
usable weights or with a node that cannot start, and the summary maths and publisher helpers it is
built from."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.qos import QoSHistoryPolicy, QoSReliabilityPolicy, qos_profile_sensor_data
from std_msgs.msg import Header

from ros_helpers import isolate_ros_network
from test_sources import typestore, write_ros2_bag

from superglue_ros.demo import summary as summary_io
from superglue_ros.demo.__main__ import Collector, main as demo_main
from superglue_ros.demo.publisher import camera_info_msg, frames_to_publish, image_topic, publisher_qos, to_time
from superglue_ros.demo.publisher import main as publisher_main
from superglue_ros.random_weights import write_files

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_TIMEOUT_S = 240


def run_demo(args, tmp_path: Path, **env_changes) -> subprocess.CompletedProcess:
    """The demo as a user runs it. TMPDIR inside tmp_path puts the random weights there, so the
    node's command line names tmp_path too (see no_process_left)."""
    env = {**os.environ, 'TMPDIR': str(tmp_path), 'OMP_NUM_THREADS': '2', **env_changes}
    env.pop('ROS_DOMAIN_ID', None)  # the demo picks its own domain
    return subprocess.run([sys.executable, '-m', 'superglue_ros.demo', *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=DEMO_TIMEOUT_S)


def processes_naming(text: str) -> list[str]:
    found = []
    for cmdline in Path('/proc').glob('[0-9]*/cmdline'):
        try:
            command = cmdline.read_bytes().replace(b'\0', b' ').decode(errors='replace')
        except OSError:
            continue
        if text in command and 'pytest' not in command:
            found.append(command)
    return found


def check_run(result, output: Path, tmp_path: Path, published: int) -> dict:
    """Checks every run shares; returns summary.json. The publisher is reliable (the demo's default), so
    every frame is accounted for: processed by the node or dropped by its mailbox, none lost on the way."""
    assert result.returncode == 0, f'demo failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}'
    assert not processes_naming(str(tmp_path)), 'the node or the publisher is still running'
    summary = json.loads((output / 'summary.json').read_text())
    assert summary['settings']['qos'] == 'reliable'
    assert summary['frames_published'] == published
    assert 1 <= summary['frames_processed'] <= published
    assert summary['frames_processed'] + summary['frames_dropped'] == published, \
        f"frames lost: {summary['frames_unaccounted']} (node.log:\n{(output / 'node.log').read_text()[-3000:]})"
    assert summary['frames_unaccounted'] == 0
    node_log = (output / 'node.log').read_text()
    # the preset (config/indoor.yaml: sinkhorn_iterations 20) under the demo's --max-keypoints 128
    assert "'max_keypoints': 128" in node_log and "'sinkhorn_iterations': 20" in node_log, node_log[-3000:]
    assert 'subscribed reliable, keep last 10' in node_log, 'the node follows the reliable publisher'
    assert summary['keyframes'] >= 1 and summary['frames'][0]['is_new_keyframe']
    assert len(summary['frames']) == summary['frames_processed']
    latency = summary['latency_ms']
    assert latency['count'] == summary['frames_processed'] and 0 < latency['p50'] <= latency['p95'] <= latency['max']

    pngs = sorted(p.name for p in (output / 'match_images').glob('*.png'))
    assert summary['match_images'] == len(pngs) >= 1, 'one PNG per match image received'
    linked = [r['match_image'] for r in summary['frames'] if r['match_image']]
    assert set(linked) <= set(pngs) and len(linked) == len(set(linked))
    for name in linked:  # named by the stamp of their frame
        record = next(r for r in summary['frames'] if r['match_image'] == name)
        assert name == f"{to_time(record['stamp']).sec}.{to_time(record['stamp']).nanosec:09d}.png"
    assert (output / 'summary.md').read_text().startswith('# superglue_ros demo')
    assert 'frames processed: ' in result.stdout
    return summary


def check_meaningless(result, output: Path, summary: dict):
    """Random weights: marked in stdout, summary.json, summary.md and on every match image."""
    assert summary['meaningless'] is True and 'MEANINGLESS' in summary['warning']
    assert summary_io.MEANINGLESS in (output / 'summary.md').read_text().splitlines()[0]
    assert result.stdout.count(summary_io.MEANINGLESS) >= 2  # at the start and in the summary
    for png in (output / 'match_images').glob('*.png'):
        image = cv2.imread(str(png))
        banner = image[-3:, :10].reshape(-1, 3).astype(int)  # bottom-left corner of the red banner
        assert np.abs(banner - [0, 0, 200]).max() <= 2, f'{png.name} is not stamped MEANINGLESS'


@pytest.mark.timeout(DEMO_TIMEOUT_S + 30)
def test_demo_on_the_synthetic_sequence(tmp_path):
    """640x480 bgr8 (900 KB) raw frames from a reliable publisher at 2 Hz (the node drops what it cannot follow)."""
    output = tmp_path / 'out'
    result = run_demo(['--random-weights', '--frames', 6, '--rate', 2, '--max-keypoints', 128, '--device', 'cpu',
                       '--output', output, '--idle-timeout', 30], tmp_path)
    summary = check_run(result, output, tmp_path, published=6)
    check_meaningless(result, output, summary)
    assert summary['settings']['source'].startswith('synthetic sequence')
    assert summary['settings']['transport'] == 'raw'
    assert {cv2.imread(str(p)).shape for p in (output / 'sequence').glob('*.png')} == {(480, 640, 3)}
    precision = summary['precision']
    assert precision['threshold_px'] == summary_io.PRECISION_THRESHOLD_PX
    matched = [r for r in summary['frames'] if r['matched']]
    assert precision['evaluated'] == sum(r['matches'] for r in matched)
    assert precision['correct'] == sum(r['correct'] for r in matched) <= precision['evaluated']
    assert precision['evaluated'] > 0, 'random weights should give correspondences to check'
    assert 0 <= precision['value'] <= 1 and precision['value'] == precision['correct'] / precision['evaluated']
    for r in summary['frames']:  # every answered frame was related to its sequence frame and keyframe
        assert 0 <= r['keyframe_source_frame'] <= r['source_frame'] < 6
    assert len(list((output / 'sequence').glob('*.png'))) == 6
    # the preset verifies with the fundamental matrix: inliers, their precision, and the tracks they continue
    assert summary['verified_with'] == ['fundamental']
    assert summary['inliers_per_frame']['count'] == len(matched)
    assert all(0 <= r['inliers'] <= r['matches'] for r in matched)
    assert precision['inliers_evaluated'] == sum(r['inliers'] for r in matched) > 0
    assert 0 <= precision['inliers_correct'] <= precision['inliers_evaluated']
    tracks = summary['tracks']
    assert 0 < tracks['count'] <= sum(r['inliers'] for r in matched)
    assert 1 <= tracks['length_frames']['max'] <= len(matched)


@pytest.mark.timeout(DEMO_TIMEOUT_S + 30)
def test_demo_compressed_on_an_image_folder(tmp_path, freiburg_paths):
    """Real 640x480 frames as JPEG sensor_msgs/CompressedImage on image/compressed; a corrupt file in the
    folder is skipped with one line, and the frames after it are still published and matched."""
    folder, output = tmp_path / 'frames', tmp_path / 'out'
    folder.mkdir()
    for path in freiburg_paths[:4]:
        shutil.copy(path, folder)
    (folder / freiburg_paths[1].name).write_bytes(freiburg_paths[1].read_bytes()[:100])  # truncated PNG
    result = run_demo(['--random-weights', '--source', folder, '--max-frames', 3, '--rate', 2,
                       '--compressed', 'jpeg', '--max-keypoints', 128, '--device', 'cpu', '--output', output,
                       '--idle-timeout', 30], tmp_path)
    summary = check_run(result, output, tmp_path, published=3)
    check_meaningless(result, output, summary)
    assert summary['settings']['source'].startswith('image folder')
    assert summary['settings']['transport'] == 'compressed (jpeg)'
    assert '/image/compressed: 1 publisher(s); subscribed reliable' in (output / 'node.log').read_text()
    publisher_log = (output / 'publisher.log').read_text()
    assert 'on /image/compressed (CompressedImage, jpeg)' in publisher_log
    assert f'warning: skipping source frame 1: cannot read {folder / freiburg_paths[1].name}' in publisher_log
    assert 'published 3 frames' in publisher_log and 'skipped 1 that could not be decoded' in publisher_log
    assert 'source frames skipped (could not be decoded, not published): 1; first: cannot read' in result.stdout
    assert summary['source_frames_skipped'][0]['index'] == 1
    assert all(r['keypoints'] > 0 for r in summary['frames']), 'every JPEG was decoded and processed'
    assert summary['precision'] is None and 'no ground truth' in result.stdout
    stamps = {float(p.stem) for p in freiburg_paths[:4] if p != freiburg_paths[1]}
    assert all(any(abs(r['stamp'] - s) < 1e-6 for s in stamps) for r in summary['frames'])  # the files' stamps


@pytest.mark.timeout(120)
def test_missing_weights_say_what_to_do_before_starting_anything(tmp_path):
    cache = tmp_path / 'empty_cache'
    cache.mkdir()
    output = tmp_path / 'out'
    result = run_demo(['--output', output], tmp_path, SUPERGLUE_ROS_WEIGHTS_DIR=str(cache))
    assert result.returncode == 2
    assert 'python -m superglue_ros.download superpoint indoor' in result.stderr
    assert str(cache) in result.stderr and '--random-weights' in result.stderr
    assert not (output / 'node.log').exists() and not (output / 'sequence').exists(), 'nothing may start'


@pytest.mark.timeout(60)
def test_unusable_weights_are_refused_before_starting_anything(tmp_path, capsys):
    """Loaded as the node loads them: a truncated checkpoint, and SuperGlue weights that do not exist
    (from which the SuperPoint weights would come), each say what is wrong; nothing starts."""
    superpoint, superglue = map(str, write_files(tmp_path))
    Path(superglue).write_bytes(Path(superglue).read_bytes()[:5000])
    output = tmp_path / 'out'
    for weights, message in ((['--superpoint-weights', superpoint, '--superglue-weights', superglue],
                              f'cannot read {superglue} as a PyTorch checkpoint'),
                             (['--superglue-weights', str(tmp_path / 'missing.pth')], 'missing.pth does not exist')):
        assert demo_main([*weights, '--output', str(output)]) == 2
        err = capsys.readouterr().err
        assert err.startswith('error: the demo needs SuperPoint and SuperGlue weights') and message in err, err
        assert '--random-weights' in err and not output.exists(), 'nothing may start'


def test_bad_demo_arguments(tmp_path, capsys):
    output = tmp_path / 'out'
    assert demo_main(['--random-weights', '--source', str(tmp_path / 'missing'), '--output', str(output)]) == 2
    assert 'does not exist' in capsys.readouterr().err and not (output / 'node.log').exists()
    a_file = tmp_path / 'picture.jpg'
    a_file.write_bytes(b'not a directory')
    for args, message in ((['--random-weights', '--output', str(a_file)], 'picture.jpg: it exists and is not a dir'),
                          (['--output', str(a_file / 'out')], 'picture.jpg exists and is not a directory'),
                          (['--random-weights', '--superglue-weights', 'outdoor'], '--random-weights replaces'),
                          (['--random-weights', '--superpoint-weights', 'sp.pth'], '--random-weights replaces'),
                          (['--rate', '-1'], '--rate must be >= 0'), (['--param', 'max_keypoints=5'], 'NAME:=VALUE'),
                          (['--max-keypoints', '0'], '--max-keypoints: max_keypoints must be an integer >= 1, or -1'),
                          (['--param', 'max_keypoint:=100'], "no parameter 'max_keypoint'; did you mean 'max_keypoints'?"),
                          (['--param', 'image_transport:=compressed'], 'use --compressed'),
                          (['--param', "cameras:=['left']"], 'one unnamed camera'),
                          (['--compressed', 'gif'], "invalid choice: 'gif'"), (['--qos', 'fast'], "invalid choice")):
        with pytest.raises(SystemExit) as exit_info:
            demo_main(args)
        last = capsys.readouterr().err.splitlines()[-1]  # one line after the usage, as argparse does
        assert exit_info.value.code == 2 and last.startswith('python -m superglue_ros.demo: error:') and message in last
    assert a_file.read_bytes() == b'not a directory' and not (tmp_path / 'sp.pth').exists()


@pytest.mark.timeout(120)
def test_a_node_that_cannot_start_stops_the_demo_without_a_summary(tmp_path):
    """A bad --param: the node's FATAL line, no summary (not even a previous run's), exit 1."""
    output = tmp_path / 'out'
    output.mkdir()
    (output / 'summary.json').write_text('{}')  # a previous run's
    result = run_demo(['--random-weights', '--param', 'match_threshold:=7.0', '--frames', 2, '--device', 'cpu',
                       '--output', output], tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert '[FATAL]' in result.stdout and 'match_threshold' in result.stdout, result.stdout
    assert 'no summary written: the node did not start' in result.stdout
    assert not (output / 'summary.json').exists() and not (output / 'summary.md').exists()
    assert not processes_naming(str(tmp_path)), 'the node or the publisher is still running'


def corrupt_second_chunk(bag: Path):
    """Breaks the checksum of the second chunk of the bag's MCAP file: the first chunk's frames read,
    then the bag fails (records: opcode, uint64 length, content; a chunk's CRC after 3 uint64s)."""
    path, = bag.glob('*.mcap')
    data, offset, chunks = bytearray(path.read_bytes()), 8, []
    while offset < len(data) and len(chunks) < 2:
        if data[offset] == 0x06:
            chunks.append(offset)
        offset += 9 + int.from_bytes(data[offset + 1:offset + 9], 'little')
    data[chunks[1] + 33:chunks[1] + 37] = b'\xde\xad\xbe\xef'
    path.write_bytes(bytes(data))


@pytest.mark.timeout(DEMO_TIMEOUT_S + 30)
def test_a_publisher_that_stops_early_still_has_its_frames_answered(tmp_path, freiburg_paths):
    """A bag whose storage is corrupt after its first MCAP chunk (1 MiB: two 640x480 frames): the publisher
    publishes those, says why it stopped and exits 1; the node still answers both, and the summary says
    the publisher stopped early instead of counting frames as lost."""
    types = typestore().types
    records = []
    for index, path in enumerate(freiburg_paths[:3]):
        stamp = types['builtin_interfaces/msg/Time'](1, index * 10 ** 8)
        image = cv2.imread(str(path))
        records.append(('/cam/image_raw', 'sensor_msgs/msg/Image', 1000 + index, types['sensor_msgs/msg/Image'](
            types['std_msgs/msg/Header'](stamp, 'camera'), 480, 640, 'bgr8', 0, 640 * 3, image.ravel())))
    bag = write_ros2_bag(tmp_path / 'recording', records, 'mcap')
    corrupt_second_chunk(bag)
    output = tmp_path / 'out'
    result = run_demo(['--random-weights', '--source', bag, '--rate', 2, '--max-keypoints', 128, '--device', 'cpu',
                       '--output', output, '--idle-timeout', 30], tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert not processes_naming(str(tmp_path)), 'the node or the publisher is still running'
    reason = f'error: {bag}: cannot read this bag (Chunk checksum mismatch.)'
    assert f'the publisher failed (exit code 1): {reason}' in result.stdout, result.stdout
    summary = json.loads((output / 'summary.json').read_text())
    assert summary['publisher_error'].startswith(reason) and summary['frames_published'] == 2
    assert summary['frames_processed'] + summary['frames_dropped'] == 2 and summary['frames_unaccounted'] == 0
    assert [r['stamp'] for r in summary['frames']][-1] == pytest.approx(1.1), 'the last frame was answered'
    line = f'the publisher stopped early, after 2 frames: {reason}'
    assert line in result.stdout and f'- {line}' in (output / 'summary.md').read_text()


# -- summary maths --------------------------------------------------------------------------------

def test_param_flags_are_not_read_as_remap_rules_of_the_demo_node(tmp_path, monkeypatch):
    """`--param static_shapes:=true` (README) was also handed to the demo's own rclpy.init through sys.argv:
    rcl read each as a deprecated remap rule (a warning per --param telling the user to use --ros-args
    --remap) and remapped the demo node's names. The demo's rclpy.init now gets no command-line arguments."""
    from superglue_ros.demo import __main__ as demo

    class Stop(Exception):
        pass
    seen = {}

    def init(*args, **kwargs):
        seen.update(kwargs, positional=args)
        raise Stop
    argv = ['--random-weights', '--param', 'static_shapes:=true', '--output', str(tmp_path)]
    monkeypatch.setattr(sys, 'argv', ['demo', *argv])
    monkeypatch.setattr(rclpy, 'init', init)
    source = type('Source', (), {'describe': lambda self: 'test', 'path': tmp_path})()
    with pytest.raises(Stop):
        demo.run(demo.parse_args(argv), ('sp.pth', 'sg.pth'), True, source, tmp_path, tmp_path)
    assert seen.get('args') is not None and not any(':=' in arg for arg in seen['args'])


def test_correct_matches_under_a_homography():
    H = np.array([[1.1, 0.05, 20], [-0.02, 0.95, -7], [1e-4, -5e-5, 1]])
    keyframe_points = np.random.default_rng(0).uniform(0, 600, (50, 2))
    exact = cv2.perspectiveTransform(keyframe_points[:, None], H)[:, 0]
    offsets = np.zeros_like(exact)
    offsets[:10, 0] = 2.9    # inside 3 px
    offsets[10:20, 1] = -3.1  # outside
    offsets[20:25] = 50      # wrong matches
    correct = summary_io.correct_matches(keyframe_points, exact + offsets, H, threshold_px=3.0)
    assert correct.tolist() == [True] * 10 + [False] * 15 + [True] * 25
    assert summary_io.correct_matches(np.zeros((0, 2)), np.zeros((0, 2)), H).shape == (0,)


def test_statistics():
    stats = summary_io.statistics([10, 20, 30, 40])
    assert stats == {'count': 4, 'mean': 25.0, 'p50': 25.0, 'p95': pytest.approx(38.5), 'max': 40.0}
    assert summary_io.statistics([]) is None


def record(stamp, matches, matched=True, new=False, correct=None, dropped=0, latency=100.0, image=None):
    return {'stamp': stamp, 'keyframe_id': 0, 'matched': matched, 'matches': matches, 'is_new_keyframe': new,
            'latency_ms': latency, 'dropped_frames': dropped, 'match_image': image, 'correct': correct}


def test_summarize_counts_and_precision(tmp_path):
    records = [record(0.0, 0, matched=False, new=True, correct=0, image='a.png'),
               record(0.1, 100, correct=90, dropped=1, latency=200.0),
               record(0.3, 40, new=True, correct=10, dropped=2, latency=300.0, image='b.png'),
               record(0.4, 30, dropped=2)]  # no ground truth for this pair: not in the precision
    summary = summary_io.summarize(records, frames_published=7, match_images=2, meaningless=False, settings={'a': 1},
                                   threshold_px=3.0)
    assert (summary['frames_processed'], summary['frames_dropped'], summary['frames_unaccounted']) == (4, 2, 1)
    assert summary['keyframes'] == 2 and summary['match_images'] == 2
    assert summary['matches_per_frame']['count'] == 3 and summary['matches_per_frame']['mean'] == 170 / 3
    assert summary['latency_ms']['max'] == 300.0
    assert summary['precision'] == {'threshold_px': 3.0, 'correct': 100, 'evaluated': 140, 'value': 100 / 140}
    assert summary['meaningless'] is False and summary['warning'] is None

    json_path, md_path = summary_io.write_summary(summary, tmp_path)
    assert json.loads(json_path.read_text())['precision']['correct'] == 100
    text = md_path.read_text()
    assert text.splitlines()[0] == '# superglue_ros demo' and 'MEANINGLESS' not in text
    assert '0.714 (100 of 140 correspondences within 3 px' in text and '| b.png |' in text

    no_truth = summary_io.summarize(records, 4, 2, meaningless=True, settings={}, threshold_px=None)
    assert no_truth['precision'] is None and no_truth['frames_unaccounted'] == 0
    assert no_truth['meaningless'] and 'MEANINGLESS' in no_truth['warning']
    assert summary_io.markdown(no_truth).splitlines()[0] == f'# superglue_ros demo - {summary_io.MEANINGLESS}'
    stopped = summary_io.summarize(records, 4, 2, meaningless=True, settings={}, threshold_px=None,
                                   publisher_error='error: x')
    assert summary_io.overview(stopped)[1] == 'the publisher stopped early, after 4 frames: error: x'
    skipping = summary_io.summarize(records, 4, 2, meaningless=False, settings={}, threshold_px=None,
                                    skipped=[{'index': 2, 'reason': 'cannot read 2.png'}])
    assert summary_io.overview(skipping)[:2] == [
        'frames published: 4', 'source frames skipped (could not be decoded, not published): 1; first: cannot read 2.png']


def test_summarize_inliers_and_tracks():
    records = [{**record(0.0, 0, matched=False, new=True), 'inliers': None, 'track_ids': []},
               {**record(0.1, 4, correct=2), 'inliers': 3, 'correct_inliers': 2, 'verified_with': 'fundamental',
                'track_ids': [1, 2, 3]},
               {**record(0.2, 3, new=True, correct=1), 'inliers': 2, 'correct_inliers': 1,
                'verified_with': 'fundamental', 'track_ids': [2, 3]},
               {**record(0.3, 2, correct=2), 'keyframe_id': 1, 'inliers': 2, 'correct_inliers': 2,
                'verified_with': 'fundamental', 'track_ids': [3, 9]}]  # 3 was inherited by keyframe 1
    summary = summary_io.summarize(records, 4, 0, meaningless=False, settings={}, threshold_px=3.0)
    assert summary['verified_with'] == ['fundamental']
    assert summary['inliers_per_frame']['count'] == 3 and summary['inliers_per_frame']['max'] == 3
    tracks = summary['tracks']  # lengths: id 1 -> 1 frame, 2 -> 2, 3 -> 3, 9 -> 1
    assert tracks['count'] == 4 and tracks['across_keyframes'] == 1
    assert tracks['length_frames'] == summary_io.statistics([1, 2, 3, 1])
    precision = summary['precision']
    assert (precision['correct'], precision['evaluated']) == (5, 9)
    assert (precision['inliers_correct'], precision['inliers_evaluated'], precision['inliers_value']) == (5, 7, 5 / 7)
    assert all('track_ids' not in r for r in summary['frames']), 'ids are summarised, not listed'
    text = '\n'.join(summary_io.overview(summary))
    assert 'inliers per frame (fundamental): mean 2.3' in text and '; inliers 0.714 (5 of 7)' in text
    assert 'tracks: 4, length in frames mean 1.8, p50 1.5' in text
    assert '(4 tracks); 1 continued past a new keyframe' in text
    assert '| 4 | 2 | 3 | 100.0 |' in summary_io.markdown(summary), 'matches, correct, inliers'

    unverified = summary_io.summarize([record(0.1, 4)], 1, 0, meaningless=False, settings={}, threshold_px=None)
    assert unverified['inliers_per_frame'] is None and unverified['tracks']['count'] == 0
    assert 'inliers per frame (not verified): n/a' in '\n'.join(summary_io.overview(unverified))


def test_stamp_meaningless_banner():
    image = np.full((300, 500, 3), 90, np.uint8)
    stamped = summary_io.stamp_meaningless(image)
    assert stamped.shape == image.shape and (image == 90).all(), 'the input is not modified'
    assert (stamped[-1, 0] == [0, 0, 200]).all() and (stamped[:250] == 90).all()
    assert (stamped[-30:] == 255).any(), 'white text on the banner'


# -- publisher helpers ----------------------------------------------------------------------------

class ListSource:
    camera_info = None

    def __init__(self, stamps):
        self.stamps = stamps

    def __len__(self):
        return len(self.stamps)

    def frames(self):
        return ((i, stamp, f'image {i}') for i, stamp in enumerate(self.stamps))


def test_looping_keeps_stamps_increasing():
    frames = list(frames_to_publish(ListSource([5.0, 5.5, 6.0]), loop=True, max_frames=7))
    assert [index for index, _, _ in frames] == [0, 1, 2, 0, 1, 2, 0]
    assert [stamp for _, stamp, _ in frames] == pytest.approx([5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0])
    once = list(frames_to_publish(ListSource([5.0, 5.5, 6.0]), loop=False, max_frames=None))
    assert [stamp for _, stamp, _ in once] == [5.0, 5.5, 6.0]
    assert len(list(frames_to_publish(ListSource([1.0, 2.0]), loop=False, max_frames=1))) == 1


def test_publisher_qos_is_a_camera_drivers():
    reliable, best_effort = publisher_qos('reliable'), publisher_qos('best_effort')
    assert (reliable.reliability, reliable.history, reliable.depth) == (
        QoSReliabilityPolicy.RELIABLE, QoSHistoryPolicy.KEEP_LAST, 10), 'REP 2003: the system default'
    assert best_effort == qos_profile_sensor_data
    assert publisher_qos('reliable', depth=3).depth == 3 and publisher_qos('best_effort', depth=1).depth == 1


def test_compressed_topic_follows_the_remapped_image_topic():
    """As image_transport: the resolved base topic + /compressed."""
    isolate_ros_network()
    context = rclpy.Context()
    rclpy.init(args=['--ros-args', '-r', 'image:=/camera/image_raw'], context=context)
    try:
        node = rclpy.create_node('publisher_names', context=context)
        assert image_topic(node, 'jpeg') == '/camera/image_raw/compressed'
        assert node.resolve_topic_name(image_topic(node, None)) == '/camera/image_raw'
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_bad_publisher_arguments(capsys):
    for args, message in ((['src', '--depth', '0'], '--depth must be >= 1'),
                          (['src', '--qos', 'fast'], 'invalid choice'),
                          (['src', '--compressed', 'tiff'], 'invalid choice')):
        with pytest.raises(SystemExit) as exit_info:
            publisher_main(args)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_stamps_and_camera_info_messages():
    stamp = to_time(1341847980.722988)
    assert (stamp.sec, stamp.nanosec) == (1341847980, 722988000)
    header = Header(frame_id='camera')
    info = camera_info_msg(None, 640, 480, header)
    assert (info.width, info.height, info.header.frame_id) == (640, 480, 'camera')
    assert not any(info.k) and not any(info.p), 'uncalibrated: zero matrices'
    calibrated = camera_info_msg({'distortion_model': 'plumb_bob', 'd': [0.1, 0, 0, 0, 0],
                                  'k': [500, 0, 319.5, 0, 500, 239.5, 0, 0, 1], 'r': [1, 0, 0, 0, 1, 0, 0, 0, 1],
                                  'p': [500, 0, 319.5, 0, 0, 500, 239.5, 0, 0, 0, 1, 0]}, 640, 480, header)
    assert calibrated.k[2] == 319.5 and calibrated.p[5] == 500 and calibrated.distortion_model == 'plumb_bob'


def test_loop_summary_recall_and_precision():
    loops = [{'keyframe_id': 0, 'source_frame': 0, 'candidates': [], 'true_loops': [], 'candidate_frames': []},
             {'keyframe_id': 5, 'source_frame': 20, 'candidates': [(1, 0.5), (0, 0.4)], 'true_loops': [0],
              'candidate_frames': [4, 0]},
             {'keyframe_id': 6, 'source_frame': 24, 'candidates': [(1, 0.6)], 'true_loops': [1],
              'candidate_frames': [4]},
             {'keyframe_id': 7, 'source_frame': 28, 'candidates': [(2, 0.3)], 'true_loops': [],
              'candidate_frames': [8]}]
    summary = summary_io.loop_summary(loops)
    assert summary['figures'] == {'keyframes': 4, 'with_a_true_loop': 2, 'recall_at_1': 0.5, 'recall_at_5': 1.0,
                                  'candidates_published': 4, 'candidates_correct': 2, 'precision': 0.5}
    text = summary_io.markdown(summary_io.summarize([record(0.0, 0, matched=False, new=True)], 1, 0, False, {}, None,
                                                    loops=loops))
    assert '| 5 (20) | 1 (4) 0.50, 0 (0) 0.40 | 0 |' in text
    assert ('loop candidates: 4 for 4 keyframes; 2 keyframes revisit an earlier place: recall@1 0.500, recall@5 1.000; '
            "precision 0.500 (2 of 4 candidates see >= 0.3 of the keyframe's image)") in text
    no_truth = summary_io.loop_summary([{'keyframe_id': 0, 'candidates': [], 'source_frame': None}])
    assert no_truth['figures'] is None


def test_the_demo_waits_for_every_keyframes_loop_candidates(tmp_path):
    """LoopCandidates come after their keyframe's Matches, on another topic: the demo's end waits for them
    (a CI run ended between the last keyframe's Matches and its LoopCandidates)."""
    collector = Collector(None, tmp_path, None, 3.0, False)
    collector.records = [{'stamp_ns': 10, 'is_new_keyframe': True}, {'stamp_ns': 20, 'is_new_keyframe': False},
                         {'stamp_ns': 30, 'is_new_keyframe': True}]
    collector.loops = [{'keyframe_id': 0, 'stamp_ns': 10, 'candidates': []}]
    assert collector.loop_candidates_missing()
    collector.loops.append({'keyframe_id': 1, 'stamp_ns': 30, 'candidates': []})
    assert not collector.loop_candidates_missing()


@pytest.mark.timeout(DEMO_TIMEOUT_S + 30)
def test_demo_reports_the_loop_candidates_of_a_revisit(tmp_path):
    """--path revisit: the summary scores the node's ~/loop_candidates against the ground-truth overlap."""
    output = tmp_path / 'out'
    result = run_demo(['--random-weights', '--path', 'revisit', '--frames', 40, '--rate', 4, '--max-keypoints', 128,
                       '--device', 'cpu', '--param', 'keyframe_min_matches:=100000', '--param',
                       'loop_exclude_recent:=3', '--param', 'loop_min_score:=-1.0', '--output', output,
                       '--idle-timeout', 30], tmp_path)
    summary = check_run(result, output, tmp_path, published=40)
    loops = summary['loop_candidates']
    keyframes = [r for r in summary['frames'] if r['is_new_keyframe']]
    assert [loop['keyframe_id'] for loop in loops['keyframes']] == list(range(len(keyframes)))
    for loop in loops['keyframes']:
        assert all(k < loop['keyframe_id'] - 3 for k, _ in loop['candidates'])
        assert len(loop['candidates']) == min(max(loop['keyframe_id'] - 3, 0), 5)  # loop_min_score -1: all pass
    figures = loops['figures']
    assert figures['with_a_true_loop'] >= 1, 'the last keyframes fly over the first ones'
    assert 0 <= figures['recall_at_1'] <= figures['recall_at_5'] <= 1
    assert 'loop candidates: ' in result.stdout and '## Loop candidates' in (output / 'summary.md').read_text()
