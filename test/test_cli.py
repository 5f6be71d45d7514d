"""The command-line tool (python -m superglue_ros.match) on two freiburg frames with confident random
weights written as original .pth files, as a Hugging Face checkpoint and as hub ids in a hub cache built
here: the JSON contract, the same result from every weight format, the default weights, files read
exactly as the original release reads them (colour PNG and JPEG, EXIF orientation, --resize), --image,
the summary, and each error path (exit code 2, one line on stderr, no traceback).

The main runs and one error run go through a fresh interpreter (python -m ...); the variations call
match.main() in this process, which is the same code without the interpreter start-up (~3 s each).
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from hub_cache import add_checkpoint, hub_env
from model_fixtures import confident_weights, write_hf_superglue, write_original
from superglue_ros import match
from superglue_ros.weights import load_superglue, load_superpoint
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
    stages = set(content['timings_ms'])
    assert {'preprocess', 'superpoint', 'total'} < stages and any(s.startswith('superglue') for s in stages)
    assert all(v >= 0 for v in content['timings_ms'].values())
    return matched.sum()


def test_json_contract(pth_run):
    content, _ = pth_run
    assert check_consistent(content, 640, 480) >= 200  # hundreds of matches between neighbouring frames
    assert len(content['keypoints0']) == len(content['keypoints1']) == 512


def check_same_result(content, reference):
    for key in ('keypoints0', 'keypoints1', 'matches0', 'image0_size', 'image1_size'):
        assert content[key] == reference[key], key
    for key in ('scores0', 'scores1', 'matching_scores0'):
        np.testing.assert_allclose(content[key], reference[key], atol=1e-5, err_msg=key)


def test_hub_id_gives_the_same_result(pth_run, weights, pair, tmp_path):
    """The Hugging Face checkpoint as a hub id in a hub cache (HF_HOME, HF_HUB_OFFLINE=1), without
    --superpoint-weights: the SuperGlue checkpoint contains its SuperPoint. A hub id that is not cached:
    one line naming it and the command that fetches it."""
    add_checkpoint(tmp_path / 'hf', 'magic-leap-community/superglue_indoor', 'b' * 40, weights['hf'])
    done = run_cli(*pair, '--superglue-weights', 'magic-leap-community/superglue_indoor', *FAST,
                   '--json', tmp_path / 'hf.json', env=hub_env(tmp_path / 'hf'))
    assert done.returncode == 0, done.stderr
    check_same_result(json.loads((tmp_path / 'hf.json').read_text()), pth_run[0])
    done = run_cli(*pair, '--superglue-weights', 'magic-leap-community/superglue_outdoor@v1.0',
                   env=hub_env(tmp_path / 'hf'))
    check_error(done, 'hub id magic-leap-community/superglue_outdoor@v1.0', 'not downloaded while loading',
                'python -m superglue_ros.download magic-leap-community/superglue_outdoor@v1.0')


def test_default_weights_are_the_presets(pth_run, weights, pair, tmp_path, cli, monkeypatch):
    """No weights flags: SuperGlue 'indoor' (as the original's match_pairs.py) with SuperPoint 'superpoint'."""
    monkeypatch.setenv('SUPERGLUE_ROS_WEIGHTS_DIR', str(tmp_path))
    shutil.copy(weights['sp'], tmp_path / 'superpoint_v1.pth')
    shutil.copy(weights['sg'], tmp_path / 'superglue_indoor.pth')
    done = cli(*pair, *FAST, '--json', tmp_path / 'out.json')
    assert done.returncode == 0, done.stderr
    check_same_result(json.loads((tmp_path / 'out.json').read_text()), pth_run[0])


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
    (['--resize', '0', '240'], 'resize must be'),
    (['--resize', '320', '240', '1'], '--resize takes one or two numbers, got 3'),
    (['--resize', '0'], 'the longest side must be an integer in [16, 8192], or -1'),
    (['--resize', '-2'], 'the longest side must be'),
    (['--resize', '100000', '-1'], 'the longest side must be'),
    (['--resize', '12'], 'the longest side must be'),
    (['--resize', '100000', '100000'], 'integers in [16, 8192]'),  # a typo that would exhaust host memory
    (['--nms-radius', '1000000000'], 'nms_radius must be an integer in [0, 64]'),
    (['--sinkhorn-iterations', '100000000'], 'sinkhorn_iterations must be an integer in [1, 1000]'),
    (['--max-keypoints', '0'], 'max_keypoints'),
    (['--match-threshold', '1.5'], 'match_threshold'),
    (['--device', 'gpu'], 'device must be'),
    (['--image', 'picture.unknown'], 'no image format'),
    (['--json', '/nonexistent/out.json'], 'does not exist'),
])
def test_bad_values(weights, pair, args, fragment, cli):
    check_error(cli(*pair, '--superglue-weights', weights['hf'], *args), fragment)


def test_random_weights_command_writes_weights_the_cli_runs(pair, tmp_path, cli):
    """The README's way to try the CLI offline: python -m superglue_ros.random_weights DIR."""
    from superglue_ros import random_weights
    assert random_weights.main([str(tmp_path / 'random')]) == 0
    superpoint, superglue = tmp_path / 'random' / 'superpoint_random.pth', tmp_path / 'random' / 'superglue_random.pth'
    done = cli(*pair, '--superpoint-weights', superpoint, '--superglue-weights', superglue, *FAST)
    assert done.returncode == 0, done.stderr
    assert int(re.search(r'^matches: (\d+)', done.stdout, re.M)[1]) > 100  # confident, though meaningless


def test_random_weights_command_where_it_cannot_write(tmp_path, capsys, monkeypatch):
    from superglue_ros import random_weights
    (tmp_path / 'a_file').write_text('')
    assert random_weights.main([str(tmp_path / 'a_file' / 'weights')]) == 2  # mkdir: OSError
    assert capsys.readouterr().err.strip().endswith('a_file/weights: Not a directory')

    def refused(obj, path, *args, **kwargs):  # what torch.save raises for a file it cannot open
        raise RuntimeError('[enforce fail at inline_container.cc:747] . open file failed with strerror: '
                           'Permission denied')
    monkeypatch.setattr(torch, 'save', refused)
    assert random_weights.main([str(tmp_path / 'read_only')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.strip().endswith('read_only: Permission denied'), err


def test_opencv_out_of_memory_is_one_line(weights, pair, cli, monkeypatch):
    """cv2.resize failing to allocate (as under a memory limit) is exit code 2 and one line."""
    def resize_out_of_memory(*args, **kwargs):
        error = cv2.error('OpenCV(5.0.0) (-4:Insufficient memory) Failed to allocate 10000000000 bytes')
        error.code = cv2.Error.StsNoMem
        raise error
    monkeypatch.setattr(cv2, 'resize', resize_out_of_memory)
    check_error(cli(*pair, '--superglue-weights', weights['hf'], '--resize', '8000', '6000'),
                'out of host memory while resizing', 'to 8000x6000 on cpu: lower --resize')


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cuda_without_cuda(weights, pair, cli):
    check_error(cli(*pair, '--superglue-weights', weights['hf'], '--device', 'cuda'), 'CUDA is not available')


# -- Files read as the original release reads them ----------------------------------------------

def original_new_size(w: int, h: int, resize) -> tuple[int, int]:
    """The new size of a w x h image for the original's --resize values (a list), as match_pairs.py reads
    them (W -1 is W) and process_resize (models/utils.py) applies them: one value >= 0 scales the longest
    side to it (sides rounded with Python's round), -1 keeps the size, two are the width and height."""
    resize = list(resize)
    if len(resize) == 2 and resize[1] == -1:
        resize = resize[:1]
    if len(resize) == 2:
        return resize[0], resize[1]
    if resize[0] == -1:
        return w, h
    return int(round(w * resize[0] / max(w, h))), int(round(h * resize[0] / max(w, h)))


def original_read_image(path, resize=None, grey=None) -> torch.Tensor:
    """read_image of magicleap/SuperGluePretrainedNetwork (models/utils.py; rotation 0, resize_float off):
    cv2.imread(path, cv2.IMREAD_GRAYSCALE), cv2.resize to the new size (original_new_size; None: as
    given) with its default interpolation (also at the same size), astype('float32'), then frame2tensor:
    image / 255. -> [1, 1, H, W]. grey: an already decoded uint8 image instead of the file."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if grey is None else grey
    w, h = image.shape[1], image.shape[0]
    w_new, h_new = (w, h) if resize is None else original_new_size(w, h, resize)
    image = cv2.resize(image, (w_new, h_new)).astype('float32')
    return torch.from_numpy(image / 255.).float()[None, None]


@pytest.fixture(scope='module')
def models(weights):
    """Our SuperPoint and SuperGlue (equal to transformers' in test_superglue_oracle.py) on the same weights."""
    return load_superpoint(weights['sp']), load_superglue(weights['sg'])


@torch.inference_mode()
def original_pipeline(models, inputs, max_keypoints: int) -> dict:
    """Matching.forward of the original (models/matching.py) on two read_image tensors: SuperPoint on
    each, then SuperGlue with each image's own size; the CLI's JSON names."""
    superpoint, superglue = models
    superpoint.config['max_keypoints'], superglue.config['sinkhorn_iterations'] = max_keypoints, 20
    data = {}
    for i, inp in enumerate(inputs):
        pred = superpoint(inp)
        data.update({f'keypoints{i}': pred['keypoints'][0][None], f'scores{i}': pred['scores'][0][None],
                     f'descriptors{i}': pred['descriptors'][0][None], f'image_size{i}': (inp.shape[3], inp.shape[2])})
    pred = superglue(data)
    return {'keypoints0': data['keypoints0'][0].numpy(), 'keypoints1': data['keypoints1'][0].numpy(),
            'scores0': data['scores0'][0].numpy(), 'scores1': data['scores1'][0].numpy(),
            'matches0': pred['matches0'][0].numpy(), 'matching_scores0': pred['matching_scores0'][0].numpy(),
            'image0_size': list(data['image_size0']), 'image1_size': list(data['image_size1'])}


def check_identical(content: dict, reference: dict):
    """Bit-identical: keypoints, scores, matches and confidences (float32 values survive JSON exactly)."""
    for key, expected in reference.items():
        got = np.asarray(content[key], dtype=np.asarray(expected).dtype)
        assert got.shape == np.shape(expected) and np.array_equal(got, expected), key


def exif_orientation_6() -> np.ndarray:
    """A little-endian TIFF (EXIF) block whose only tag is Orientation (0x0112, SHORT) = 6: the stored
    image is shown rotated 90 degrees clockwise."""
    entry = struct.pack('<HHIHH', 0x0112, 3, 1, 6, 0)
    return np.frombuffer(b'II*\x00' + struct.pack('<IH', 8, 1) + entry + struct.pack('<I', 0), np.uint8)


@pytest.fixture(scope='module')
def files(freiburg_paths, tmp_path_factory):
    """Colour PNG frames as stored, frame 1 as a colour JPEG, and frame 0 as a colour JPEG with EXIF
    Orientation=6 (stored 640x480, shown 480x640)."""
    out = tmp_path_factory.mktemp('files')
    frames = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in freiburg_paths[:2]]
    jpeg = out / 'frame1.jpg'
    assert cv2.imwrite(str(jpeg), frames[1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    rotated = out / 'portrait.jpg'
    assert cv2.imwriteWithMetadata(str(rotated), frames[0], [cv2.IMAGE_METADATA_EXIF], [exif_orientation_6()],
                                   [cv2.IMWRITE_JPEG_QUALITY, 90])
    return {'png': list(freiburg_paths[:2]), 'jpeg': jpeg, 'portrait': rotated}


def run_json(cli, tmp_path, paths, weights, *args) -> dict:
    done = cli(*paths, '--superpoint-weights', weights['sp'], '--superglue-weights', weights['sg'],
               '--sinkhorn-iterations', 20, *args, '--json', tmp_path / 'out.json')
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / 'out.json').read_text())


def test_colour_png_as_the_original(files, weights, models, tmp_path, cli):
    """libpng's grey differs from cv2.cvtColor by one level on about half of the pixels, which changes
    some of 1024 keypoints. The CLI gives the original's keypoints, scores and matches."""
    paths = files['png']
    colour = cv2.imread(str(paths[0]), cv2.IMREAD_COLOR)
    decoded, converted = cv2.imread(str(paths[0]), cv2.IMREAD_GRAYSCALE), cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    assert colour.std(axis=2).mean() > 1 and (decoded != converted).mean() > 0.3  # colour; the two greys differ
    content = run_json(cli, tmp_path, paths, weights, '--max-keypoints', 1024)
    reference = original_pipeline(models, [original_read_image(p) for p in paths], 1024)
    check_identical(content, reference)
    assert len(content['keypoints0']) == 1024 and (reference['matches0'] > -1).sum() > 100
    with torch.inference_mode():  # read with cvtColor, as the CLI did before: other keypoints
        other = models[0](original_read_image(None, grey=converted))['keypoints'][0].numpy()
    assert len({tuple(k) for k in reference['keypoints0']} - {tuple(k) for k in other}) > 0


def test_jpeg_files_and_exif_orientation_as_the_original(files, weights, models, tmp_path, cli):
    """Colour JPEGs: decoded to grey they are their luma, up to several levels from the cvtColor of
    their decoded colours. Orientation=6: stored 640x480, a 480x640 portrait to the original, with the
    keypoints in the portrait."""
    path, other = files['portrait'], files['jpeg']
    converted = cv2.cvtColor(cv2.imread(str(other), cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY)
    assert np.abs(cv2.imread(str(other), cv2.IMREAD_GRAYSCALE).astype(int) - converted).max() >= 3
    content = run_json(cli, tmp_path, [path, other], weights, '--max-keypoints', 512)
    assert content['image0_size'] == [480, 640] and content['image1_size'] == [640, 480]
    stored = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
    assert stored.shape == (480, 640)
    portrait = np.ascontiguousarray(np.rot90(stored, k=-1))  # the stored rows turned clockwise
    reference = original_pipeline(models, [original_read_image(None, grey=portrait), original_read_image(other)], 512)
    check_identical(content, reference)
    assert np.asarray(content['keypoints0'])[:, 1].max() > 480 and (reference['matches0'] > -1).sum() > 50


def test_resize_as_the_original(files, weights, models, tmp_path, cli):
    """--resize: cv2.resize with its default (bilinear) interpolation on the uint8 image, then float;
    INTER_AREA, which the node's resize uses, gives another image."""
    paths, size = files['png'], (400, 300)
    grey = cv2.imread(str(paths[0]), cv2.IMREAD_GRAYSCALE)
    assert not np.array_equal(cv2.resize(grey, size), cv2.resize(grey, size, interpolation=cv2.INTER_AREA))
    content = run_json(cli, tmp_path, paths, weights, '--max-keypoints', 512, '--resize', *size)
    assert content['image0_size'] == content['image1_size'] == list(size)
    check_identical(content, original_pipeline(models, [original_read_image(p, size) for p in paths], 512))


@pytest.mark.parametrize('resize, sizes', [
    ([333], ([250, 333], [333, 250])),       # the longest side, each image its own aspect: 480 * 333 / 640 = 249.75
    ([333, -1], ([250, 333], [333, 250])),   # W -1 is W
    ([-1], ([480, 640], [640, 480])),        # as given
    ([-1, -1], ([480, 640], [640, 480])),
    ([400, 300], ([400, 300], [400, 300])),  # WIDTH HEIGHT, as before
])
def test_resize_forms_of_match_pairs(files, weights, models, tmp_path, cli, resize, sizes):
    """Issue 17 point 8: --resize takes what the original's match_pairs.py takes (one number: the longest
    side; -1: as given; W -1; W H), on a portrait and a landscape image: the original's sizes, and its
    keypoints, scores and matches bit for bit."""
    paths = [files['portrait'], files['jpeg']]
    stored = cv2.imread(str(paths[0]), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
    portrait = np.ascontiguousarray(np.rot90(stored, k=-1))  # as cv2.imread shows it (EXIF Orientation=6)
    content = run_json(cli, tmp_path, paths, weights, '--max-keypoints', 256, '--resize', *resize)
    assert [content['image0_size'], content['image1_size']] == list(sizes)
    reference = original_pipeline(models, [original_read_image(None, resize, grey=portrait),
                                           original_read_image(paths[1], resize)], 256)
    check_identical(content, reference)
    done = cli(*paths, '--superglue-weights', weights['hf'], *FAST, '--resize', *resize)  # the summary says so
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f'image0 {paths[0]}: {sizes[0][0]}x{sizes[0][1]}'
                                  + (' (resized from 480x640)' if sizes[0] != [480, 640] else ','))


def test_a_longest_side_too_small_for_an_image_is_one_line(files, weights, tmp_path, cli):
    """--resize 20 makes a 640x480 image 20x15, below SuperPoint's 16 pixels: refused, naming the file."""
    check_error(cli(files['jpeg'], files['jpeg'], '--superglue-weights', weights['hf'], '--resize', 20),
                'frame1.jpg is 640x480: --resize 20 (the longest side) makes it 20x15, below 16 pixels')
