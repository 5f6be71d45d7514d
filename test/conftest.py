import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# One intra-op thread: the suite also runs node processes beside the test process, and on a small
# machine two torch threads per process fight for the cores (measured: 2-40x slower model calls).
torch.set_num_threads(1)

# Models the suite's nodes export for the onnxruntime backend (the presets' backend: auto, on a CPU) go to a
# cache of this session's, not to the user's ~/.cache; processes the tests start inherit it.
if not os.environ.get('SUPERGLUE_ROS_ONNX_DIR'):
    os.environ['SUPERGLUE_ROS_ONNX_DIR'] = tempfile.mkdtemp(prefix='superglue_ros_onnx_')
    atexit.register(shutil.rmtree, os.environ['SUPERGLUE_ROS_ONNX_DIR'], ignore_errors=True)

REPO_ROOT = Path(__file__).resolve().parents[1]
FREIBURG_DIR = REPO_ROOT.parent / 'shared' / 'data' / 'freiburg_sequence'
# SUPERGLUE_ROS_TEST_FRAMES=synthetic runs the suite as on a clone with nothing beside it
SYNTHETIC_FRAMES = os.environ.get('SUPERGLUE_ROS_TEST_FRAMES') == 'synthetic'
FRAMES_ARE_REAL = not SYNTHETIC_FRAMES and any(FREIBURG_DIR.glob('*.png'))  # what freiburg_paths gives


@pytest.fixture(scope='session')
def freiburg_paths(tmp_path_factory):
    """17 frames of a 640x480 BGR camera sequence as PNG files named by their stamps in seconds
    (e.g. 1341847980.722988.png), in capture order: the real ones of ../shared/data/freiburg_sequence,
    or, where that is absent (a user's clone of the repository alone), 17 frames of the synthetic
    textured scene (demo/synthetic.py, seed 0) at 1 Hz, so that the suite needs nothing beside the
    repository."""
    if FRAMES_ARE_REAL:
        return sorted(FREIBURG_DIR.glob('*.png'))
    from superglue_ros.demo.synthetic import SEQUENCE_FILE, generate_sequence

    sequence = generate_sequence(tmp_path_factory.mktemp('generated_sequence'), num_frames=17, size=(640, 480),
                                 seed=0, rate_hz=1.0)
    paths = [file.rename(file.with_name(f'{stamp:.6f}.png')) for file, stamp in zip(sequence.files, sequence.stamps)]
    (sequence.directory / SEQUENCE_FILE).unlink()  # a plain folder of frames, as the real one
    return paths


@pytest.fixture(scope='module')
def context():
    """An rclpy Context of the test module's own, on this session's isolated DDS network (ros_helpers).
    Only tests that take it import rclpy."""
    import rclpy
    from ros_helpers import isolate_ros_network

    isolate_ros_network()
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)
