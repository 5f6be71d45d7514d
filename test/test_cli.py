"""The command-line tool (python -m superglue_ros.match) on two freiburg frames with confident random
weights written as original .pth files and as a Hugging Face checkpoint: the JSON contract, the same
result from both weight formats, --resize, --image, the summary, and each error path (exit code 2,
one line on stderr, no traceback).

The main runs and one error run go through a fresh interpreter (python -m ...); the variations call
match.main() in this process, which is the same code without the interpreter start-up (~3 s each).
"""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from model_fixtures import confident_weights, write_hf_superglue, write_original
from superglue_ros import match
from superglue_ros.visualization import MARGIN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = {'keypoints0', 'keypoints1', 'scores0', 'scores1', 'matches0', 'matching_scores0', 'image0_size',
        'image1_size', 'timings_ms'}
FAST = ['--sinkhorn-iterations', '20', '--max-keypoints', '512']  # faster than the defaults


def run_cli(*args, env=None):
    """The CLI in a fresh interpreter, with as many torch threads as this one."""
    env = {**os.environ, 'OMP_NUM_THREADS': str(torch.get_num_threads()), **(env or {})}
    return subprocess.run([sys.executable, '-m', 'superglue_ros.match', *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def cli(capsys):
    """match.main() in this process: (exit code, stdout, stderr)."""
    def call(*args):
        code = match.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)
    return call


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    """{'sp': .pth, 'sg': .pth, 'hf': Hugging Face SuperGlue directory (with its SuperPoint)}."""
    directory = tmp_path_factory.mktemp('weights')
    sp, sg = confident_weights(seed=0)
    return {'sp': write_original(directory / 'superpoint.pth', sp),
            'sg': write_original(directory / 'superglue.pth', sg),
            'hf': write_hf_superglue(directory / 'superglue_hf', sg, sp)}


@pytest.fixture(scope='module')
def pair(freiburg_paths):
    return freiburg_paths[0], freiburg_paths[1]


@pytest.fixture(scope='module')
def pth_run(weights, pair, tmp_path_factory):
    """JSON content and picture path of a run with the .pth weights."""
    out = tmp_path_factory.mktemp('pth')
    done = run_cli(*pair, '--superpoint-weights', weights['sp'], '--superglue-weights', weights['sg'], *FAST,
                   '--json', out / 'out.json', '--image', out / 'out.png')
    assert done.returncode == 0, done.stderr
    assert done.stdout == '' and done.stderr == ''  # --json: nothing printed
    return json.loads((out / 'out.json').read_text()), out / 'out.png'


def check_consistent(content, width, height):
    assert set(content) == KEYS
    assert content['image0_size'] == content['image1_size'] == [width, height]
    for i in (0, 1):
        keypoints = np.asarray(content[f'keypoints{i}'], np.float64)
        assert keypoints.shape == (len(content[f'scores{i}']), 2) and len(keypoints) > 100
        assert (keypoints >= 0).all() and (keypoints < [width, height]).all()
        assert keypoints[:, 0].max() > width / 2 and keypoints[:, 1].max() > height / 2  # whole image used
        assert 0 < min(content[f'scores{i}']) and max(content[f'scores{i}']) <= 1
    matches0, scores0 = np.asarray(content['matches0']), np.asarray(content['matching_scores0'])
    assert matches0.dtype.kind == 'i' and len(matches0) == len(scores0) == len(content['keypoints0'])
    assert ((matches0 >= -1) & (matches0 < len(content['keypoints1']))).all()
    matched = matches0 > -1
    assert 0 < matched.sum() < len(matches0)  # some matched, some -1
    assert len(np.unique(matches0[matched])) == matched.sum()  # one-to-one
    assert ((scores0 >= 0) & (scores0 <= 1)).all() and (scores0[matched] > 0.2).all()  # default threshold
    assert set(content['timings_ms']) == {'preprocess', 'superpoint', 'superglue_encode', 'superglue_match', 'total'}
    assert all(v >= 0 for v in content['timings_ms'].values())
    return matched.sum()


def test_json_contract(pth_run):
    content, _ = pth_run
    assert check_consistent(content, 640, 480) >= 200  # hundreds of matches between neighbouring frames
    assert len(content['keypoints0']) == len(content['keypoints1']) == 512


def test_hf_checkpoint_gives_the_same_result(pth_run, weights, pair, tmp_path):
    # no --superpoint-weights: the Hugging Face SuperGlue checkpoint contains its SuperPoint
    done = run_cli(*pair, '--superglue-weights', weights['hf'], *FAST, '--json', tmp_path / 'hf.json')
    assert done.returncode == 0, done.stderr
    hf, pth = json.loads((tmp_path / 'hf.json').read_text()), pth_run[0]
    for key in ('keypoints0', 'keypoints1', 'matches0', 'image0_size', 'image1_size'):
        assert hf[key] == pth[key], key
    for key in ('scores0', 'scores1', 'matching_scores0'):
        np.testing.assert_allclose(hf[key], pth[key], atol=1e-5, err_msg=key)


def test_image_written(pth_run):
    content, picture_path = pth_run
    picture = cv2.imread(str(picture_path), cv2.IMREAD_UNCHANGED)
    assert picture is not None and picture.shape == (480, 640 + MARGIN + 640, 3)
    assert picture.std() > 20  # the frames are drawn, not a blank canvas
    # match lines are coloured: some pixels have clearly different B, G, R
    assert (np.ptp(picture.astype(int), axis=2) > 100).sum() > 1000


def test_resize_and_summary(weights, pair, tmp_path, cli):
    done = cli(*pair, '--superpoint-weights', weights['sp'], '--superglue-weights', weights['sg'], *FAST,
                   '--resize', 320, 200, '--json', tmp_path / 'out.json')
    assert done.returncode == 0, done.stderr
    check_consistent(json.loads((tmp_path / 'out.json').read_text()), 320, 200)

    # without --json: a short summary on stdout (settings given on the command line are applied)
    done = cli(*pair, '--superglue-weights', weights['hf'], '--resize', 160, 120, '--max-keypoints', 50,
                   '--nms-radius', 3, '--keypoint-threshold', 0.01, '--match-threshold', 0.5,
                   '--sinkhorn-iterations', 5)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f'image0 {pair[0]}: 160x120 (resized from 640x480), 50 keypoints')
    assert lines[1].startswith(f'image1 {pair[1]}: 160x120')
    assert lines[2].startswith('matches: ') and 'superpoint' in lines[3] and len(lines) == 4


def check_error(done, *fragments):
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert 'Traceback' not in done.stderr and done.stdout == ''
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_missing_image(weights, pair, tmp_path, cli):
    done = run_cli(pair[0], tmp_path / 'nothing.png', '--superpoint-weights', weights['sp'],
                   '--superglue-weights', weights['sg'])  # a real process: its exit code
    check_error(done, 'nothing.png', 'no such file')
    (tmp_path / 'text.png').write_text('not an image')
    check_error(cli(tmp_path / 'text.png', pair[1], '--superglue-weights', weights['hf']), 'text.png',
                'cannot read image')


def test_missing_weights(pair, tmp_path, weights, cli, monkeypatch):
    done = cli(*pair, '--superpoint-weights', weights['sp'], '--superglue-weights', tmp_path / 'missing.pth')
    check_error(done, 'missing.pth', 'does not exist', 'python -m superglue_ros.download')
    # presets that were never downloaded
    monkeypatch.setenv('SUPERGLUE_ROS_WEIGHTS_DIR', str(tmp_path))
    done = cli(*pair, '--superglue-weights', 'indoor')
    check_error(done, str(tmp_path), 'not downloaded', 'python -m superglue_ros.download')


@pytest.mark.parametrize('args, fragment', [
    (['--resize', '0', '240'], '--resize'),
    (['--resize', '320'], '--resize'),
    (['--max-keypoints', '0'], 'max_keypoints'),
    (['--match-threshold', '1.5'], 'match_threshold'),
    (['--device', 'gpu'], '--device'),
    (['--image', 'picture.unknown'], 'no image format'),
    (['--json', '/nonexistent/out.json'], 'does not exist'),
])
def test_bad_values(weights, pair, args, fragment, cli):
    check_error(cli(*pair, '--superglue-weights', weights['hf'], *args), fragment)


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cuda_without_cuda(weights, pair, cli):
    check_error(cli(*pair, '--superglue-weights', weights['hf'], '--device', 'cuda'), 'CUDA is not available')
