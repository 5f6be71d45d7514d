"""Running out of memory is an answer, not a crash (issue 9): the CLI on a 2560x1920 textured image
against itself with its defaults (all keypoints, as the original), refused before SuperGlue by the
max_matching_memory_mb estimate; and under an address-space limit (resource.setrlimit in a
subprocess), where SuperPoint itself cannot allocate. Both exit with code 2 and one line.
The node's frame path and ~/match_images are tested in test_node.py and test_node_process.py.
"""
import os
import resource
import subprocess
import sys

import cv2
import numpy as np
import pytest

from model_fixtures import confident_weights, write_original
from superglue_ros.matcher import matching_memory_bytes
from superglue_ros.settings import SETTINGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    directory = tmp_path_factory.mktemp('weights')
    sp, sg = confident_weights(seed=0)
    return write_original(directory / 'superpoint.pth', sp), write_original(directory / 'superglue.pth', sg)


@pytest.fixture(scope='module')
def textured(tmp_path_factory):
    """A 2560x1920 textured image (random 4x4-pixel blocks): SuperPoint finds tens of thousands of
    keypoints in it, as the real weights do in a high-resolution photo of a textured scene."""
    blocks = np.random.default_rng(0).integers(0, 256, (480, 640, 3)).astype(np.uint8)
    path = tmp_path_factory.mktemp('big') / 'big.png'
    cv2.imwrite(str(path), cv2.resize(blocks, (2560, 1920), interpolation=cv2.INTER_NEAREST))
    return path


def run_cli(*args, address_space: int | None = None):
    """The CLI in a fresh interpreter (2 torch threads: SuperPoint on two 2560x1920 images takes a while),
    optionally under RLIMIT_AS."""
    def limit():
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    return subprocess.run([sys.executable, '-m', 'superglue_ros.match', *map(str, args)], cwd=REPO,
                          env={**os.environ, 'OMP_NUM_THREADS': '2'}, capture_output=True, text=True, timeout=600,
                          preexec_fn=limit)


def test_the_default_limit_changes_nothing_at_640x480_with_2048_keypoints():
    assert matching_memory_bytes(2048, 2048, 4) < SETTINGS['max_matching_memory_mb'].default * 2 ** 20 / 10


def test_a_huge_pair_is_refused_before_superglue(weights, textured):
    done = run_cli(textured, textured, '--superpoint-weights', weights[0], '--superglue-weights', weights[1])
    print(done.stderr)
    assert done.returncode == 2 and done.stdout == ''
    assert done.stderr.count('\n') == 1 and 'Traceback' not in done.stderr
    assert 'max_matching_memory_mb' in done.stderr and 'lower max_keypoints' in done.stderr
    n = int(done.stderr.split('SuperGlue on ')[1].split(' x ')[0])
    assert n > 50000  # all keypoints of a textured 2560x1920 image: tens of GiB for SuperGlue


def test_out_of_memory_under_a_limit_is_one_line(weights, textured):
    limit = 3 * 2 ** 30  # the interpreter, torch and the weights fit; SuperPoint at 2560x1920 does not
    done = run_cli(textured, textured, '--superpoint-weights', weights[0], '--superglue-weights', weights[1],
                   address_space=limit)
    print(done.stderr)
    assert done.returncode == 2 and done.stderr.count('\n') == 1 and 'Traceback' not in done.stderr
    assert 'out of host memory while detecting keypoints in 2560x1920 images' in done.stderr
    assert 'resize' in done.stderr


def test_out_of_memory_in_onnxruntime_under_a_limit_is_one_line(weights, textured, tmp_path, monkeypatch):
    """The onnxruntime backend's allocation failure comes out of run_with_iobinding as a plain RuntimeError
    ('Error in execution: ... Failed to allocate memory'), not as onnxruntime's own exception type: the
    same one line as torch's."""
    pytest.importorskip('onnxruntime')
    from superglue_ros.export import cached_export
    from superglue_ros.weights import load_superglue, load_superpoint

    monkeypatch.setenv('SUPERGLUE_ROS_ONNX_DIR', str(tmp_path))  # exported here first, outside the limit
    cached_export(load_superpoint(str(weights[0])), load_superglue(str(weights[1]), {'sinkhorn_iterations': 20}))
    done = run_cli(textured, textured, '--superpoint-weights', weights[0], '--superglue-weights', weights[1],
                   '--sinkhorn-iterations', '20', '--backend', 'onnxruntime', address_space=3 * 2 ** 30)
    print(done.stderr)
    assert done.returncode == 2 and done.stderr.count('\n') == 1 and 'Traceback' not in done.stderr
    assert 'out of host memory while detecting keypoints in 2560x1920 images' in done.stderr
