"""The demo: the node and a sequence publisher in separate processes over DDS, with a summary.

    python -m superglue_ros.demo [--source DIR|VIDEO|BAG] [--output DIR] [--rate HZ] [--random-weights]
        [--preset indoor|outdoor] [--device auto|cpu|cuda] [--max-keypoints N] [--param NAME:=VALUE ...]
        [--qos reliable|best_effort] [--compressed jpeg|png] [--path smooth|revisit]

Default source: the synthetic sequence (synthetic.py), generated into OUTPUT/sequence, whose
ground-truth homographies give the match precision; with --path revisit the camera circles back over
its start, and the summary also scores the node's loop candidates (~/loop_candidates) against the
ground-truth overlap of the keyframes. Steps:
  1. check the weights (official presets from the cache; each loaded as the node will load it: missing
     or corrupt ones say what to do and exit 2 before starting anything); --random-weights writes
     confident random weights to a temp dir;
  2. start `python -m superglue_ros.node --ros-args --params-file config/PRESET.yaml -p ...` (its log:
     OUTPUT/node.log) and wait until it is up (a node that cannot start, e.g. for a bad --param: its
     FATAL line, no summary, exit 1). The preset holds the real-time settings (indoor: 1024
     keypoints, 20 Sinkhorn iterations; the node's own defaults are the original release's: every
     keypoint, 100 iterations); the demo's flags and --param come after it on the command line, so
     they win;
  3. subscribe to /superglue/matches, /superglue/match_image and /superglue/loop_candidates in this process;
  4. start `python -m superglue_ros.demo.publisher SOURCE` (OUTPUT/publisher.log): a camera driver,
     reliable keep last 10 as REP 2003 asks (--qos best_effort: a sensor-data driver), raw bgr8 or, with
     --compressed, CompressedImage on image/compressed (the node then gets image_transport:=compressed);
     wait until it is done and the node has answered its last frame (or went quiet for --idle-timeout s),
     also when the publisher stops early (e.g. a bag corrupt in the middle: the summary says so, exit 1);
  5. stop both processes (SIGINT, then SIGTERM, then SIGKILL) and write OUTPUT/match_images/*.png,
     OUTPUT/summary.json and OUTPUT/summary.md.
All three processes use one DDS domain ($ROS_DOMAIN_ID, else one derived from this process id)
with discovery on this host only, so parallel demos and tests never see each other.
"""
import argparse
import difflib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from ..image import to_bgr8
from ..ros.image_conversion import COMPRESSED_CODECS
from ..settings import SETTINGS, check, defaults
from . import summary as summary_io
from .sources import SourceError, open_source
from .synthetic import DEFAULTS as SYNTHETIC_DEFAULTS, PATHS, generate_sequence

NODE_NAME = 'superglue'
PRESETS = ('indoor', 'outdoor')  # config/<preset>.yaml: one camera each (config/stereo.yaml has two)
# node parameters the demo sets itself: it feeds one unnamed camera, raw or --compressed
DEMO_PARAMETERS = {'cameras': 'the demo feeds one unnamed camera', 'image_transport': 'use --compressed'}
STOP_GRACE_S = (5.0, 3.0)  # after SIGINT, after SIGTERM; then SIGKILL
MATCH_IMAGE_WAIT_S = 5.0  # after the last frame's Matches, for its match image


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='python -m superglue_ros.demo', description=__doc__.split('\n\n')[0],
                                     epilog='Writes match_images/*.png, summary.json, summary.md, node.log and '
                                            'publisher.log into --output.')
    add = parser.add_argument
    add('--source', metavar='DIR|VIDEO|BAG', help='image folder, video file or ROS 2 bag (default: the synthetic '
                                                  'sequence with ground truth, generated into OUTPUT/sequence)')
    add('--topic', help='image topic of a bag with several')
    add('--output', type=Path, default=Path('output/demo'), metavar='DIR', help='default: output/demo')
    add('--rate', type=float, default=2.0, metavar='HZ',
        help='frames published per second; 0: as fast as possible (default: 2, so that a CPU-only node '
             'answers a good share of them; the node drops the frames it has no time for)')
    add('--max-frames', type=int, metavar='N', help='publish only the first N frames')
    add('--frames', type=int, default=SYNTHETIC_DEFAULTS['num_frames'], metavar='N',
        help='length of the synthetic sequence (default: %(default)s)')
    add('--seed', type=int, default=0, help='seed of the synthetic sequence (default: 0)')
    add('--path', choices=PATHS, default=SYNTHETIC_DEFAULTS['path'],
        help="camera path of the synthetic sequence: 'smooth' stays over one place, 'revisit' circles back over "
             'its start (the summary then scores the loop candidates; use --frames 90 or more) (default: smooth)')
    add('--random-weights', action='store_true',
        help='confident random weights instead of the official ones (offline): everything runs, but the matches '
             'are MEANINGLESS, and every output says so')
    add('--superpoint-weights', metavar='SPEC',
        help="preset, hub id or path (default: from --superglue-weights, as the node's superpoint_weights: the "
             "SuperPoint inside a Hugging Face SuperGlue checkpoint, else the preset 'superpoint')")
    add('--superglue-weights', metavar='SPEC', help="'indoor', 'outdoor' or a path (default: the preset's name)")
    add('--preset', choices=PRESETS, default='indoor',
        help="the node's parameters from config/PRESET.yaml, the real-time settings (default: indoor); the flags "
             'below override it')
    add('--device', choices=('auto', 'cpu', 'cuda'), default='auto', help="the node's device (default: auto)")
    add('--max-keypoints', type=int, metavar='N', help="the node's max_keypoints (default: the preset's)")
    add('--param', action='append', default=[], metavar='NAME:=VALUE',
        help='another node parameter, e.g. --param keyframe_min_matches:=100 (repeatable)')
    add('--qos', choices=('reliable', 'best_effort'), default='reliable',
        help="the publisher's QoS: reliable, keep last 10 (a REP 2003 camera driver, default) or best_effort "
             '(a sensor-data driver); the node follows it')
    add('--compressed', choices=COMPRESSED_CODECS,
        help='publish sensor_msgs/CompressedImage on image/compressed, as image_transport does, and start the '
             'node with image_transport:=compressed')
    add('--threshold', type=float, default=summary_io.PRECISION_THRESHOLD_PX, metavar='PX',
        help='a correspondence is correct within this distance of the ground truth (default: %(default)g)')
    add('--startup-timeout', type=float, default=120.0, metavar='S',
        help='seconds the node may take to load its models (default: %(default)g)')
    add('--idle-timeout', type=float, default=20.0, metavar='S',
        help='once all frames are published, stop after S seconds without Matches (default: %(default)g)')
    add('--timeout', type=float, default=600.0, metavar='S', help='bound on the whole run (default: %(default)g)')
    args = parser.parse_args(argv)
    if args.rate < 0:
        parser.error(f'--rate must be >= 0 (0: as fast as possible), got {args.rate:g}')
    if args.max_frames is not None and args.max_frames < 1:
        parser.error(f'--max-frames must be >= 1, got {args.max_frames}')
    if args.frames < 2:
        parser.error(f'--frames must be >= 2, got {args.frames}')
    if args.max_keypoints is not None:
        try:
            check('max_keypoints', args.max_keypoints)
        except ValueError as e:
            parser.error(f'--max-keypoints: {e}')
    if not args.threshold > 0:
        parser.error(f'--threshold must be > 0, got {args.threshold:g}')
    for param in args.param:
        name = param.split(':=')[0]
        if ':=' not in param or not name:
            parser.error(f'--param takes NAME:=VALUE (as ros2 run -p), got {param!r}')
        if name not in SETTINGS and not name.startswith('qos_overrides.'):
            close = difflib.get_close_matches(name, SETTINGS, n=1)
            parser.error(f'--param {param}: the node has no parameter {name!r}'
                         + (f"; did you mean '{close[0]}'?" if close else '; see its parameters in the README'))
        if name in DEMO_PARAMETERS:
            parser.error(f'--param {param}: the demo sets {name} itself ({DEMO_PARAMETERS[name]})')
    if args.random_weights and (args.superglue_weights is not None or args.superpoint_weights is not None):
        parser.error('--random-weights replaces the weights: leave out --superglue-weights and --superpoint-weights, '
                     'or --random-weights')
    output = args.output.resolve()
    existing = next(p for p in (output, *output.parents) if p.exists())
    if not existing.is_dir():
        parser.error(f'--output {args.output}: {"it" if existing == output else existing} exists and is not a '
                     'directory; give a directory (created if missing)')
    if args.superglue_weights is None:
        args.superglue_weights = args.preset
    return args


def say(line: str = ''):
    print(f'[demo] {line}', flush=True)


# -- weights -------------------------------------------------------------------------------------

def official_weights(args) -> tuple[str, str] | None:
    """The weights specs to pass on to the node, after checking they are there and load as the node
    loads them (Matcher.from_weights), so that corrupt or mismatched weights are refused before anything
    starts; None (and what to do, printed) when they are not. Any spec weights.py takes; a Hugging Face
    hub id is resolved here (from its cache, or fetched into it unless HF_HUB_OFFLINE is set) and passed
    on as its snapshot directory, so the node loads exactly what was checked without asking the hub again."""
    from ..download import DOWNLOAD_COMMAND, PRESETS, parse_hub_id, weights_cache_dir
    from ..weights import PRESET_MODELS, WeightsError, load_superglue, load_superpoint, resolve, superpoint_source
    specs, problems, missing = [], [], []
    superglue = args.superglue_weights
    try:  # no SuperPoint weights: the ones the node will take from the SuperGlue weights (weights.py's rule)
        superpoint = args.superpoint_weights or superpoint_source(superglue)
    except WeightsError as e:  # the SuperGlue weights cannot be read
        superpoint = None
        problems.append(str(e))
    for spec, what in ((superpoint, 'SuperPoint'), (superglue, 'SuperGlue')):
        try:
            path = resolve(spec, what) if spec is not None else None
            specs.append(str(path) if parse_hub_id(spec) else spec)
        except WeightsError as e:
            if str(e) not in problems:
                problems.append(str(e))
            downloadable = spec in PRESETS and PRESET_MODELS[spec] == what or parse_hub_id(spec)
            if downloadable and spec not in missing:  # not downloaded (not a preset of the other model)
                missing.append(spec)
    if not problems:
        try:
            load_superpoint(specs[0], superglue_spec=specs[1])
            load_superglue(specs[1])
            return specs[0], specs[1]
        except WeightsError as e:
            problems.append(str(e))
    print('error: the demo needs SuperPoint and SuperGlue weights:', file=sys.stderr)
    for problem in problems:
        print(f'  {problem}', file=sys.stderr)
    if missing:
        print(f'The official weights (non-commercial research license) are fetched, presets into the weights cache\n'
              f'  {weights_cache_dir()}  (set $SUPERGLUE_ROS_WEIGHTS_DIR to use another directory)\n'
              f'and Hugging Face hub ids into the Hugging Face cache, with:\n  {DOWNLOAD_COMMAND} {" ".join(missing)}',
              file=sys.stderr)
    print('Without them (offline), run the demo with --random-weights: the whole pipeline runs, but the\n'
          'matches are MEANINGLESS.', file=sys.stderr)
    return None


# -- processes -----------------------------------------------------------------------------------

def preset_file(name: str) -> Path:
    """config/<name>.yaml of this source tree, else of the installed package (colcon: share/superglue_ros)."""
    path = Path(__file__).resolve().parents[2] / 'config' / f'{name}.yaml'
    if not path.is_file():
        try:
            from ament_index_python.packages import get_package_share_directory
            path = Path(get_package_share_directory('superglue_ros')) / 'config' / f'{name}.yaml'
        except (ImportError, LookupError, OSError):  # not installed; OSError: no ROS environment
            pass
    return path


# Fast DDS (the default RMW) passes samples between processes through a shared-memory segment of
# 512 KiB by default: a 640x480 bgr8 image (900 KB) goes in fragments, and a best-effort reader loses
# the whole image when one fragment is lost (README, "Large images over Fast DDS"). A reliable reader
# has lost fragments sent again, and the node's subscription is reliable whenever the camera publishes
# reliably (ros/qos.py), so the default demo (a reliable publisher, as REP 2003 asks of drivers) runs
# on Fast DDS's defaults, as a robot would. With --qos best_effort the demo plays a sensor-data
# driver, and then gives all three processes this profile, the README's fix for best-effort cameras:
# a 32 MiB segment keeps every image in shared memory; UDP stays for discovery.
FASTDDS_PROFILE = """<?xml version="1.0" encoding="UTF-8"?>
<profiles xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles">
  <transport_descriptors>
    <transport_descriptor><transport_id>shm_large</transport_id><type>SHM</type>
      <segment_size>33554432</segment_size></transport_descriptor>
    <transport_descriptor><transport_id>udp</transport_id><type>UDPv4</type></transport_descriptor>
  </transport_descriptors>
  <participant profile_name="superglue_demo" is_default_profile="true">
    <rtps>
      <userTransports><transport_id>shm_large</transport_id><transport_id>udp</transport_id></userTransports>
      <useBuiltinTransports>false</useBuiltinTransports>
    </rtps>
  </participant>
</profiles>
"""
DDS_VARIABLES = ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE', 'FASTRTPS_DEFAULT_PROFILES_FILE')


def ros_environment(temp: Path, best_effort: bool) -> dict:
    """This process's environment with the demo's DDS domain, localhost-only discovery, for a
    best-effort publisher the Fast DDS profile above (unless another RMW or profile was chosen), and
    this source tree importable (the node and the publisher are started with python -m)."""
    env = dict(os.environ)
    env.setdefault('ROS_DOMAIN_ID', str(os.getpid() % 100 + 1))
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    fastdds = env.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp').startswith('rmw_fastrtps')
    chosen = env.get('FASTRTPS_DEFAULT_PROFILES_FILE') or env.get('FASTDDS_DEFAULT_PROFILES_FILE')
    if best_effort and fastdds and not chosen:
        profile = temp / 'fastdds_profile.xml'
        profile.write_text(FASTDDS_PROFILE)
        env['FASTRTPS_DEFAULT_PROFILES_FILE'] = str(profile)
    package_root = str(Path(__file__).resolve().parents[2])
    env['PYTHONPATH'] = os.pathsep.join(p for p in (package_root, env.get('PYTHONPATH')) if p)
    env['PYTHONUNBUFFERED'] = '1'
    return env


def start(command: list[str], log_path: Path, env: dict) -> subprocess.Popen:
    """A child in its own session (a terminal's Ctrl-C reaches the demo only, which stops it)."""
    log = open(log_path, 'w')
    try:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    finally:
        log.close()  # the child holds its own descriptor


def stop(process: subprocess.Popen | None, name: str):
    """SIGINT (a ROS node's clean shutdown), then SIGTERM, then SIGKILL, each after a grace period."""
    if process is None or process.poll() is not None:
        return
    for sig, grace in zip((signal.SIGINT, signal.SIGTERM), STOP_GRACE_S):
        process.send_signal(sig)
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            pass
    process.kill()
    process.wait()
    say(f'{name} did not stop on SIGINT / SIGTERM and was killed')


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:])
    except OSError:
        return '(no log)'


def reason_in(path: Path, marker: str) -> str | None:
    """The last line of a log starting with marker: a process's one-line reason ('[FATAL]', 'error:'), or None."""
    return next((line for line in reversed(log_tail(path, 200).splitlines()) if line.startswith(marker)), None)


def nanoseconds(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds: exact keys to relate messages by stamp."""
    return stamp.sec * 10 ** 9 + stamp.nanosec


# -- the run -------------------------------------------------------------------------------------

class Collector:
    """Subscribes to the node's matches, match images and loop candidates; keeps one record per Matches
    and per LoopCandidates."""

    def __init__(self, node, output: Path, sequence, threshold_px: float, meaningless: bool):
        self.node, self.output, self.sequence = node, output, sequence
        self.threshold_px, self.meaningless = threshold_px, meaningless
        self.records, self.images = [], {}  # images: stamp ns -> file name
        self.loops = []                     # per LoopCandidates: keyframe_id, stamp_ns, candidates [(id, score)]
        self.last_message = time.monotonic()
        self.lock = threading.Lock()
        self.subscriptions = []
        # ground truth: stamp as published (ns) -> frame of the sequence
        from .publisher import to_time
        self.frame_of = {}
        if sequence is not None:
            for index, stamp in enumerate(sequence.stamps):
                self.frame_of[nanoseconds(to_time(float(stamp)))] = index

    def subscribe(self, matches_type, image_type, loop_type):
        """Reliable subscriptions, keep last 100: the node publishes reliably (rclpy's default QoS), and a
        deep history keeps every Matches while this process's executor is busy writing match images."""
        for topic, type_, callback in ((f'/{NODE_NAME}/matches', matches_type, self.on_matches),
                                       (f'/{NODE_NAME}/match_image', image_type, self.on_match_image),
                                       (f'/{NODE_NAME}/loop_candidates', loop_type, self.on_loop_candidates)):
            self.subscriptions.append(self.node.create_subscription(type_, topic, callback, 100))

    def connected(self) -> bool:
        return all(s.get_publisher_count() > 0 for s in self.subscriptions)

    def on_matches(self, msg):
        stamp_ns, keyframe_ns = nanoseconds(msg.header.stamp), nanoseconds(msg.keyframe_header.stamp)
        verified = msg.verified_with not in ('', 'none')
        inlier = np.asarray(msg.inlier, np.uint8).astype(bool) if verified else np.ones(len(msg.confidence), bool)
        record = {
            'stamp': stamp_ns * 1e-9, 'stamp_ns': stamp_ns, 'frame_index': msg.frame_index,
            'keyframe_id': msg.keyframe_id,
            'keyframe_stamp': keyframe_ns * 1e-9, 'is_new_keyframe': msg.is_new_keyframe,
            # a frame that is its own keyframe had nothing to match against (first frame, time jump)
            'matched': not (msg.is_new_keyframe and keyframe_ns == stamp_ns),
            'matches': len(msg.confidence), 'keypoints': msg.frame_keypoint_count,
            'keyframe_keypoints': msg.keyframe_keypoint_count, 'latency_ms': float(msg.latency_ms),
            'dropped_frames': msg.dropped_frames, 'match_image': None,
            'verified_with': msg.verified_with, 'inliers': int(inlier.sum()) if verified else None,
            # the tracks this frame continues: inliers only when verified (only those are inherited)
            'track_ids': np.asarray(msg.track_ids, np.uint64)[inlier].tolist(),
        }
        line = f"frame {stamp_ns * 1e-9:.6f} s vs keyframe {msg.keyframe_id}: {record['matches']} matches"
        frame, keyframe = self.frame_of.get(stamp_ns), self.frame_of.get(keyframe_ns)
        if frame is not None and keyframe is not None:
            homography = self.sequence.homography(keyframe, frame)
            correct = summary_io.correct_matches(msg.keyframe_points, msg.frame_points, homography,
                                                 self.threshold_px)
            record.update(source_frame=frame, keyframe_source_frame=keyframe, correct=int(correct.sum()))
            line = (f'sequence frame {frame} vs keyframe {keyframe}: {record["matches"]} matches, '
                    f'{record["correct"]} correct')
            if verified:
                record['correct_inliers'] = int((correct & inlier).sum())
        if verified and record['matched']:
            line += f", {record['inliers']} {msg.verified_with} inliers"
        if not record['matched']:
            line += ' (new keyframe, nothing to match yet)'
        elif msg.is_new_keyframe:
            line += ', new keyframe'
        with self.lock:
            self.records.append(record)
            self.last_message = time.monotonic()
        say(f"{line}, latency {msg.latency_ms:.0f} ms, dropped so far {msg.dropped_frames}"
            + (f' [{summary_io.MEANINGLESS}]' if self.meaningless else ''))

    def on_loop_candidates(self, msg):
        with self.lock:
            self.loops.append({'keyframe_id': msg.keyframe_id, 'stamp_ns': nanoseconds(msg.header.stamp),
                               'candidates': list(zip(msg.candidate_ids.tolist(), msg.scores.tolist()))})

    def loop_candidates_missing(self) -> bool:
        """A new keyframe's LoopCandidates is not here yet: the node publishes it after the keyframe's Matches,
        on another topic, so it may arrive after the last frame's Matches and match image."""
        with self.lock:
            received = {loop['stamp_ns'] for loop in self.loops}
            return any(r['is_new_keyframe'] and r['stamp_ns'] not in received for r in self.records)

    def finished_loops(self, exclude_recent: int) -> list[dict]:
        """The loop candidates received, each keyframe with its frame of the sequence and, where the sequence
        has ground truth, the earlier keyframes (not among the exclude_recent before it) that truly overlap it
        (summary.loop_summary)."""
        with self.lock:
            loops = [dict(loop) for loop in self.loops]
        frames = {loop['keyframe_id']: self.frame_of.get(loop['stamp_ns']) for loop in loops}
        for loop in loops:
            frame = frames[loop['keyframe_id']]
            loop['source_frame'] = frame
            if frame is None or self.sequence is None:
                continue
            loop['true_loops'] = [k for k, other in frames.items() if other is not None
                                  and k < loop['keyframe_id'] - exclude_recent
                                  and self.sequence.overlap(frame, other) >= summary_io.LOOP_OVERLAP]
            loop['candidate_frames'] = [frames.get(k) for k, _ in loop['candidates']]
        return loops

    def on_match_image(self, msg):
        from ..ros.image_conversion import image_msg_to_numpy
        image = to_bgr8(*image_msg_to_numpy(msg))
        if self.meaningless:
            image = summary_io.stamp_meaningless(image)
        name = f'{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}.png'
        cv2.imwrite(str(self.output / 'match_images' / name), image)
        with self.lock:
            self.images[nanoseconds(msg.header.stamp)] = name

    def received_stamps(self) -> set:
        with self.lock:
            return {r['stamp_ns'] for r in self.records}

    def image_stamps(self) -> set:
        with self.lock:
            return set(self.images)

    def finished_records(self) -> list[dict]:
        with self.lock:
            for record in self.records:
                record['match_image'] = self.images.get(record['stamp_ns'])
            return list(self.records)


def read_report(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def wait_for(condition, process: subprocess.Popen, what: str, timeout_s: float, log: Path) -> bool:
    """Poll condition() until true; False (and why, printed) when process exits or timeout_s passes."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None:
            fatal = reason_in(log, '[FATAL]')
            say(f'{what} ended with exit code {process.returncode}'
                + (f': {fatal}' if fatal else f'; {log.name} ends with:\n{log_tail(log)}'))
            return False
        if time.monotonic() > deadline:
            say(f'timed out after {timeout_s:.0f} s waiting for {what}; {log.name} ends with:\n{log_tail(log)}')
            return False
        time.sleep(0.1)
    return True


def drive(args, own, collector: Collector, commands: dict, output: Path, env: dict, processes: dict) -> int:
    """Start the node, then the publisher; return once the node answered the last frame (0) or on
    a failure (1, with the reason printed). When the publisher fails part way, the node still answers
    the frames it published (1). Started processes are put in `processes`."""
    from sensor_msgs.msg import Image
    from superglue_ros.msg import LoopCandidates, Matches
    deadline = time.monotonic() + args.timeout
    node_log, publisher_log = output / 'node.log', output / 'publisher.log'

    say('starting the node: python ' + ' '.join(commands['node'][1:]))
    node = processes['node'] = start(commands['node'], node_log, env)
    say('waiting for the node to load its models ...')
    image_topic = '/image/compressed' if args.compressed else '/image'  # image_transport's name

    def node_up():
        return own.count_publishers(f'/{NODE_NAME}/matches') > 0 and own.count_subscribers(image_topic) > 0
    if not wait_for(node_up, node, 'the node', min(args.startup_timeout, args.timeout), node_log):
        return 1
    collector.subscribe(Matches, Image, LoopCandidates)
    if not wait_for(collector.connected, node, "the node's topics", 30.0, node_log):
        return 1

    say('node ready; starting the publisher: python ' + ' '.join(commands['publisher'][1:]))
    publisher = processes['publisher'] = start(commands['publisher'], publisher_log, env)
    if not wait_for(lambda: publisher.poll() is not None, node, 'the publisher to finish',
                    deadline - time.monotonic(), node_log):
        return 1
    report = read_report(commands['report'])
    failed = int(publisher.returncode != 0 or report is None)
    if failed:
        reason = reason_in(publisher_log, 'error:')
        say(f'the publisher failed (exit code {publisher.returncode})'
            + (f': {reason}' if reason else f'; {publisher_log.name} ends with:\n{log_tail(publisher_log)}'))
    if not report or not report['frames']:
        return failed
    sec, nanosec = report['frames'][-1]['stamp']
    last_ns, published_at = sec * 10 ** 9 + nanosec, time.monotonic()  # as nanoseconds() counts
    say(f"published {report['published']} frames{' before it stopped' if failed else ''}; waiting for the node "
        'to answer the last one ...')

    def done():  # the last frame's Matches, its match image and every keyframe's loop candidates, or silence
        now = time.monotonic()
        if last_ns in collector.received_stamps():
            return ((last_ns in collector.image_stamps() and not collector.loop_candidates_missing())
                    or now - collector.last_message > MATCH_IMAGE_WAIT_S)
        return now - max(collector.last_message, published_at) > args.idle_timeout
    if not wait_for(done, node, 'the last Matches', deadline - time.monotonic(), node_log):
        return 1
    if last_ns not in collector.received_stamps():
        say(f'no Matches for {args.idle_timeout:g} s: the last frame was lost or dropped')
    return failed


def ros_problem() -> str | None:
    """Why this process cannot run ROS 2 with the project's messages, or None."""
    try:
        import rclpy  # noqa: F401
        import superglue_ros.msg  # noqa: F401  (generated by the colcon build into install/)
    except ImportError as e:
        return (f'ROS 2 or the superglue_ros messages are not available ({e}): run `make setup`, then '
                '`. .venv/bin/activate && . install/setup.bash` (or use `make demo`)')
    return None


def run(args, weights: tuple[str, str], meaningless: bool, source, output: Path, temp: Path) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    env = ros_environment(temp, best_effort=args.qos == 'best_effort')
    os.environ.update({k: env[k] for k in DDS_VARIABLES if k in env})  # for this process's own node
    preset = preset_file(args.preset)
    settings = {'source': source.describe(), 'rate_hz': args.rate, 'max_frames': args.max_frames,
                'qos': args.qos, 'transport': f'compressed ({args.compressed})' if args.compressed else 'raw',
                'preset': str(preset), 'superpoint_weights': weights[0], 'superglue_weights': weights[1],
                'device': args.device, 'max_keypoints': args.max_keypoints, 'params': args.param,
                'ros_domain_id': env['ROS_DOMAIN_ID']}
    say(f'source: {source.describe()}')
    say(f"output: {output}; ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, discovery on this host only")
    params = [f'superpoint_weights:={weights[0]}', f'superglue_weights:={weights[1]}', f'device:={args.device}',
              *([f'max_keypoints:={args.max_keypoints}'] if args.max_keypoints is not None else []),
              *(['image_transport:=compressed'] if args.compressed else []), *args.param]
    report_path = output / 'publisher_report.json'
    report_path.unlink(missing_ok=True)
    commands = {
        # rcl applies --params-file and -p in command-line order: the demo's values override the preset's
        'node': [sys.executable, '-m', 'superglue_ros.node', '--ros-args', '-r', f'__node:={NODE_NAME}',
                 '--params-file', str(preset), *[arg for param in params for arg in ('-p', param)]],
        'publisher': [sys.executable, '-m', 'superglue_ros.demo.publisher', str(source.path),
                      '--rate', f'{args.rate:g}', '--qos', args.qos,
                      *(['--compressed', args.compressed] if args.compressed else []),
                      '--wait-for-subscribers', '1', '--report', str(report_path),
                      *(['--topic', args.topic] if args.topic else []),
                      *(['--max-frames', str(args.max_frames)] if args.max_frames else [])],
        'report': report_path,
    }

    # args=[]: not sys.argv, whose `--param NAME:=VALUE` rcl would read as deprecated remap rules of this
    # process's own node (a warning per --param, with wrong advice); the node gets them as -p above
    rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)  # Ctrl-C and SIGTERM are handled here
    own = rclpy.create_node('superglue_demo')
    executor = SingleThreadedExecutor()
    executor.add_node(own)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    collector = Collector(own, output, source.sequence, args.threshold, meaningless)
    processes = {}
    try:
        status = drive(args, own, collector, commands, output, env, processes)
    except KeyboardInterrupt:
        say('interrupted')
        status = 130
    finally:
        stop(processes.get('publisher'), 'the publisher')
        stop(processes.get('node'), 'the node')
        executor.shutdown(timeout_sec=2)
        spinner.join(timeout=2)
        own.destroy_node()
        rclpy.try_shutdown()

    publisher = processes.get('publisher')
    if publisher is None:  # the node did not start (its reason is above): nothing was published
        say(f'no summary written: the node did not start; see {output / "node.log"}')
        return status or 1
    report = read_report(report_path)
    records = collector.finished_records()
    publisher_error = (reason_in(output / 'publisher.log', 'error:') or f'exit code {publisher.returncode}'
                       if publisher.returncode else None)
    summary = summary_io.summarize(records, report['published'] if report else 0, len(collector.images),
                                   meaningless, settings, args.threshold if source.sequence is not None else None,
                                   publisher_error, report.get('skipped') if report else None,
                                   collector.finished_loops(exclude_recent(args)))
    json_path, md_path = summary_io.write_summary(summary, output)
    say('summary' + (f' - {summary_io.MEANINGLESS}' if meaningless else '') + ':')
    for line in summary_io.overview(summary):
        say(f'  {line}')
    say(f'wrote {json_path}, {md_path} and {len(collector.images)} match images in {output / "match_images"}')
    if status == 0 and not records:
        say(f'the node answered no frame: see {output / "node.log"}')
        return 1
    return status


def exclude_recent(args) -> int:
    """The node's loop_exclude_recent: a --param's value, else the default (the presets leave it)."""
    given = [param.split(':=', 1)[1] for param in args.param if param.split(':=')[0] == 'loop_exclude_recent']
    return int(given[-1]) if given else defaults('loop')['loop_exclude_recent']


def prepare_source(args, output: Path):
    if args.source is None:
        directory = output / 'sequence'
        say(f'generating the synthetic sequence ({args.frames} frames, seed {args.seed}, path {args.path}) in '
            f'{directory}')
        generate_sequence(directory, num_frames=args.frames, seed=args.seed, path=args.path)
        return open_source(directory)
    return open_source(args.source, topic=args.topic)


def main(argv=None) -> int:
    args = parse_args(argv)
    output = args.output.resolve()
    meaningless = args.random_weights
    if meaningless:
        say(f'{summary_io.MEANINGLESS}: {summary_io.MEANINGLESS_NOTE}')
    else:
        weights = official_weights(args)
        if weights is None:
            return 2
    problem = ros_problem()
    if problem:
        print(f'error: {problem}', file=sys.stderr)
        return 2
    if not preset_file(args.preset).is_file():
        print(f'error: the preset {preset_file(args.preset)} is missing: run the demo from a checkout of superglue_ros '
              'or from its colcon install (`. install/setup.bash`)', file=sys.stderr)
        return 2
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f'error: cannot create --output {output}: {e.strerror}; give a directory you can write to',
              file=sys.stderr)
        return 2
    try:
        source = prepare_source(args, output)
    except (SourceError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    shutil.rmtree(output / 'match_images', ignore_errors=True)
    (output / 'match_images').mkdir()
    for name in ('summary.json', 'summary.md'):  # a previous run's: never taken for this one's
        (output / name).unlink(missing_ok=True)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # SystemExit: `finally` blocks run
    try:
        with tempfile.TemporaryDirectory(prefix='superglue_demo_') as temp:
            if meaningless:
                from ..random_weights import write_files  # torch: imported only when needed
                weights = tuple(map(str, write_files(Path(temp))))
            return run(args, weights, meaningless, source, output, Path(temp))
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == '__main__':
    sys.exit(main())
