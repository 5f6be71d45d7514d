from pathlib import Path

import pytest
import torch

# One intra-op thread: the suite also runs node processes beside the test process, and on a small
# machine two torch threads per process fight for the cores (measured: 2-40x slower model calls).
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
FREIBURG_DIR = REPO_ROOT.parent / 'shared' / 'data' / 'freiburg_sequence'


@pytest.fixture(scope='session')
def freiburg_paths():
    """The 17 real 640x480 BGR frames of the shared test sequence, in capture order."""
    paths = sorted(FREIBURG_DIR.glob('*.png'))
    if not paths:
        pytest.fail(f'test data missing: expected PNG frames in {FREIBURG_DIR} (see ../shared/data/README.md)')
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
