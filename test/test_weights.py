"""Weights loading: both formats for both models, presets, wrapped training checkpoints, Hugging Face hub
ids from a hub cache built here (offline), and every kind of bad weights."""
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from hub_cache import add_checkpoint, hub_env
from model_fixtures import (confident_weights, hf_superglue, load_grey, superglue_input, superglue_to_hf,
                            superpoint_to_hf, write_hf_superglue, write_hf_superpoint, write_original)
from superglue_ros.download import DOWNLOAD_COMMAND
from superglue_ros.models import SuperGlue, SuperPoint
from superglue_ros.weights import WeightsError, load_superglue, load_superpoint, weights_cache_dir


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """The confident weights in every supported form."""
    superpoint_state, superglue_state = confident_weights()
    root = tmp_path_factory.mktemp('weights')
    return {
        'superpoint_pth': write_original(root / 'superpoint_v1.pth', superpoint_state),
        'superglue_pth': write_original(root / 'superglue_indoor.pth', superglue_state),
        'superglue_zip_pth': write_original(root / 'superglue_new.pth', superglue_state, legacy=False),
        'superpoint_hf': write_hf_superpoint(root / 'hf_superpoint', superpoint_state),
        'superglue_hf': write_hf_superglue(root / 'hf_superglue', superglue_state, superpoint_state),
        'root': root,
    }


def same_state(model, state):
    got = model.state_dict()
    return got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)


# ---------------------------------------------------------------------------------------------
# Formats

def test_original_pth_loads_exactly(files):
    superpoint_state, superglue_state = confident_weights()
    superpoint = load_superpoint(files['superpoint_pth'], {'max_keypoints': 100})
    assert isinstance(superpoint, SuperPoint) and not superpoint.training
    assert superpoint.config['max_keypoints'] == 100 and same_state(superpoint, superpoint_state)
    for key in ('superglue_pth', 'superglue_zip_pth'):
        superglue = load_superglue(str(files[key]), {'match_threshold': 0.3})
        assert isinstance(superglue, SuperGlue) and not superglue.training
        assert superglue.config['match_threshold'] == 0.3 and same_state(superglue, superglue_state)


def test_hugging_face_checkpoints_convert_exactly(files):
    """Directory or lone .safetensors file; a SuperGlue checkpoint serves as SuperPoint too."""
    superpoint_state, superglue_state = confident_weights()
    assert same_state(load_superpoint(files['superpoint_hf']), superpoint_state)
    assert same_state(load_superpoint(files['superpoint_hf'] / 'model.safetensors'), superpoint_state)
    assert same_state(load_superglue(files['superglue_hf']), superglue_state)
    assert same_state(load_superglue(files['superglue_hf'] / 'model.safetensors'), superglue_state)
    assert same_state(load_superpoint(files['superglue_hf']), superpoint_state)
    assert same_state(load_superpoint(None, superglue_spec=files['superglue_hf']), superpoint_state)


def test_hugging_face_config_sets_the_architecture(tmp_path):
    """A 2-layer, 2-head, 64-dim SuperGlue: the architecture comes from config.json."""
    torch.manual_seed(0)
    config = {'descriptor_dim': 64, 'keypoint_encoder': [16, 32], 'gnn_layers': ['self', 'cross'], 'num_heads': 2}
    state = SuperGlue(config).state_dict()
    state['bin_score'] = torch.tensor(2.5)
    superpoint_state = SuperPoint({'descriptor_dim': 64}).state_dict()
    hf = hf_superglue(state, superpoint_state, keypoint_detector_config={'descriptor_decoder_dim': 64},
                      hidden_size=64, keypoint_encoder_sizes=[16, 32], gnn_layers_types=['self', 'cross'],
                      num_attention_heads=2)
    hf.save_pretrained(tmp_path)
    superglue = load_superglue(tmp_path, {'sinkhorn_iterations': 10})
    assert {k: superglue.config[k] for k in config} == config and superglue.config['sinkhorn_iterations'] == 10
    assert same_state(superglue, state)
    assert load_superpoint(tmp_path).config['descriptor_dim'] == 64

    with pytest.raises(WeightsError, match=r'num_heads: config 4, checkpoint 2'):
        load_superglue(tmp_path, {'num_heads': 4})


@torch.inference_mode()
def test_pth_and_hugging_face_give_identical_outputs(files, freiburg_paths):
    images = [load_grey(freiburg_paths[i])[..., :240, :320] for i in (2, 3)]
    config = {'max_keypoints': 300}
    models = {'pth': (load_superpoint(files['superpoint_pth'], config), load_superglue(files['superglue_pth'])),
              'hf': (load_superpoint(None, config, superglue_spec=files['superglue_hf']),
                     load_superglue(files['superglue_hf']))}
    outputs = {}
    for name, (superpoint, superglue) in models.items():
        features = [superpoint(image) for image in images]
        outputs[name] = features, superglue(superglue_input(*features, image_size=(320, 240)))
    (features_a, matches_a), (features_b, matches_b) = outputs['pth'], outputs['hf']
    for a, b in zip(features_a, features_b):
        assert all(torch.equal(a[key][0], b[key][0]) for key in ('keypoints', 'scores', 'descriptors'))
    assert all(torch.equal(matches_a[key], matches_b[key]) for key in matches_a)
    assert (matches_a['matches0'] > -1).sum() > 100


def test_presets_resolve_in_the_cache_directory(files, tmp_path, monkeypatch):
    monkeypatch.setenv('SUPERGLUE_ROS_WEIGHTS_DIR', str(tmp_path))
    assert weights_cache_dir() == tmp_path
    with pytest.raises(WeightsError) as error:
        load_superglue('indoor')
    message = str(error.value)
    assert str(tmp_path / 'superglue_indoor.pth') in message and DOWNLOAD_COMMAND in message
    with pytest.raises(WeightsError, match='superpoint_v1.pth'):
        load_superpoint(None, superglue_spec='outdoor')

    shutil.copy(files['superpoint_pth'], tmp_path / 'superpoint_v1.pth')
    shutil.copy(files['superglue_pth'], tmp_path / 'superglue_outdoor.pth')
    superpoint_state, superglue_state = confident_weights()
    assert same_state(load_superglue('outdoor'), superglue_state)
    assert same_state(load_superpoint('superpoint'), superpoint_state)
    assert same_state(load_superpoint(None, superglue_spec='outdoor'), superpoint_state)


# ---------------------------------------------------------------------------------------------
# Bad weights: each error says what was wrong

def test_missing_file_names_the_path_and_the_download_command(tmp_path):
    missing = tmp_path / 'nowhere' / 'superglue_indoor.pth'
    with pytest.raises(WeightsError) as error:
        load_superglue(missing)
    assert str(missing) in str(error.value) and DOWNLOAD_COMMAND in str(error.value)
    with pytest.raises(WeightsError, match='no SuperPoint weights given'):
        load_superpoint(None)
    with pytest.raises(WeightsError, match='no SuperGlue weights given'):
        load_superglue(None)


def test_corrupt_files(files, tmp_path):
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(files['superglue_zip_pth'].read_bytes()[:5000])
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'\x00not a checkpoint' * 100)
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    bad_safetensors = tmp_path / 'model.safetensors'
    bad_safetensors.write_bytes(b'{"oops"')
    for path in (truncated, garbage, empty, files['superglue_pth'].with_name('legacy_truncated.pth')):
        if path.name == 'legacy_truncated.pth':
            path.write_bytes(files['superglue_pth'].read_bytes()[:-1000])
        with pytest.raises(WeightsError, match='corrupt') as error:
            load_superglue(path)
        assert str(path) in str(error.value)
    with pytest.raises(WeightsError, match='safetensors.*corrupt'):
        load_superpoint(bad_safetensors)
    bad_json = tmp_path / 'hf'
    shutil.copytree(files['superpoint_hf'], bad_json)
    (bad_json / 'config.json').write_text('{"model_type": ')
    with pytest.raises(WeightsError, match='config.json as JSON'):
        load_superpoint(bad_json)


def test_corrupt_user_file_and_corrupt_preset_get_their_own_advice(tmp_path, monkeypatch):
    """Downloading again fits a preset file only; a file of the user's is checked or saved again."""
    monkeypatch.setenv('SUPERGLUE_ROS_WEIGHTS_DIR', str(tmp_path / 'cache'))
    (tmp_path / 'cache').mkdir()
    user, preset = tmp_path / 'text.pth', tmp_path / 'cache' / 'superpoint_v1.pth'
    user.write_text('hello world\n')
    with pytest.raises(WeightsError) as error:
        load_superpoint(user)
    message = str(error.value)
    assert message.endswith('the file is corrupt or not a PyTorch checkpoint: check the path or save it again'), message
    assert DOWNLOAD_COMMAND not in message
    for text in ('hello world\n', 'not a checkpoint\n'):  # torch reads the second as a (refused) pickle
        preset.write_text(text)
        for spec in ('superpoint', preset):
            with pytest.raises(WeightsError) as error:
                load_superpoint(spec)
            assert str(error.value).endswith(f'download it again ({DOWNLOAD_COMMAND} superpoint)'), (spec, error.value)


def test_refused_pickles_give_no_torch_warnings(tmp_path):
    """A non-zip pickle of protocol 4 and a pickled module: our error alone, none of torch's UserWarnings."""
    legacy, module = tmp_path / 'legacy.pth', tmp_path / 'module.pth'
    legacy.write_bytes(pickle.dumps({'conv1a.weight': [1.0, 2.0]}, protocol=4))
    torch.save(torch.nn.Linear(2, 2), module)
    for path in (legacy, module):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            with pytest.raises(WeightsError, match='not a checkpoint of plain tensors'):
                load_superpoint(path)
        assert [str(w.message) for w in caught] == [], path


def test_pickled_code_is_never_executed(tmp_path):
    marker = tmp_path / 'executed'

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ('pwned',))

    path = tmp_path / 'evil.pth'
    torch.save({'conv1a.weight': Payload()}, path)
    with pytest.raises(WeightsError, match='not a checkpoint of plain tensors'):
        load_superpoint(path)
    assert not marker.exists()


def test_not_a_state_dict(tmp_path):
    path = tmp_path / 'list.pth'
    torch.save([torch.zeros(3)], path)
    with pytest.raises(WeightsError, match='not a state dict'):
        load_superpoint(path)
    path = tmp_path / 'other.pth'
    torch.save({'backbone.weight': torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match='no SuperPoint or SuperGlue tensors.*backbone.weight'):
        load_superglue(path)
    directory = tmp_path / 'dir'
    directory.mkdir()
    (directory / 'config.json').write_text('{}')
    with pytest.raises(WeightsError, match=r"no model.safetensors \(found: \['config.json'\]\)"):
        load_superglue(directory)


def test_wrong_model_file(files):
    with pytest.raises(WeightsError, match='is a SuperPoint checkpoint, not SuperGlue'):
        load_superglue(files['superpoint_pth'])
    with pytest.raises(WeightsError, match='is a SuperPoint checkpoint, not SuperGlue'):
        load_superglue(files['superpoint_hf'])
    with pytest.raises(WeightsError, match='is a SuperGlue checkpoint, not SuperPoint'):
        load_superpoint(files['superglue_pth'])


def test_a_preset_of_the_other_model_is_refused_before_it_is_looked_for(tmp_path, monkeypatch):
    """The wrong model is the problem, not a missing download (no preset is downloaded here)."""
    monkeypatch.setenv('SUPERGLUE_ROS_WEIGHTS_DIR', str(tmp_path))
    superglue = ("'superpoint' is a SuperPoint preset, not SuperGlue weights: the SuperGlue weights take 'indoor', "
                 "'outdoor', a .pth/.safetensors file, a Hugging Face directory or a hub id")
    for load in (lambda: load_superglue('superpoint'), lambda: load_superpoint(None, superglue_spec='superpoint')):
        with pytest.raises(WeightsError) as error:
            load()
        assert str(error.value) == superglue
    for preset in ('indoor', 'outdoor'):
        with pytest.raises(WeightsError) as error:
            load_superpoint(preset, superglue_spec='indoor')
        assert str(error.value) == (f"'{preset}' is a SuperGlue preset, not SuperPoint weights: the SuperPoint "
                                    "weights take 'superpoint', a .pth/.safetensors file, a Hugging Face directory or "
                                    'a hub id')


def test_a_superpoint_file_as_the_superglue_weights_is_named_as_such(files):
    """Also without SuperPoint weights, where SuperPoint would come from the SuperGlue weights: the wrong
    file is the problem, not a missing 'superpoint' preset."""
    for spec in (files['superpoint_pth'], files['superpoint_hf']):
        for load in (lambda: load_superglue(spec), lambda: load_superpoint(None, superglue_spec=spec)):
            with pytest.raises(WeightsError, match='is a SuperPoint checkpoint, not SuperGlue weights: pass it as '
                                                   'the SuperPoint weights'):
                load()


def test_superpoint_from_the_superglue_checkpoint_reads_it_once(files, monkeypatch):
    from superglue_ros import weights
    reads = []
    read_checkpoint = weights.read_checkpoint
    monkeypatch.setattr(weights, 'read_checkpoint', lambda spec, what: reads.append(spec) or read_checkpoint(spec, what))
    load_superpoint(None, superglue_spec=files['superglue_hf'])
    assert reads == [files['superglue_hf']]


def test_weights_directory_that_is_a_file(tmp_path, monkeypatch):
    blocker = tmp_path / 'weights'
    blocker.write_text('not a directory')
    for directory in (blocker, blocker / 'sub'):
        monkeypatch.setenv('SUPERGLUE_ROS_WEIGHTS_DIR', str(directory))
        with pytest.raises(WeightsError) as error:
            load_superglue('indoor')
        assert str(error.value) == (f"SuperGlue weights preset 'indoor': the weights directory {directory} cannot be "
                                    f'used: {blocker} is a file, and SUPERGLUE_ROS_WEIGHTS_DIR (else '
                                    '$XDG_CACHE_HOME/superglue_ros) must be a directory')


def test_superpoint_from_an_original_superglue_file_is_the_preset(files, tmp_path, monkeypatch):
    """An original SuperGlue .pth holds no SuperPoint: the 'superpoint' preset goes with it, as in the
    original release; when that is not downloaded, the error says why it was asked for."""
    monkeypatch.setenv('SUPERGLUE_ROS_WEIGHTS_DIR', str(tmp_path))
    with pytest.raises(WeightsError) as error:
        load_superpoint(None, superglue_spec=files['superglue_pth'])
    message = str(error.value)
    for fragment in ('no SuperPoint weights given', 'superglue_indoor.pth (original .pth SuperGlue checkpoint) hold '
                     "none, so the preset 'superpoint' is used", str(tmp_path / 'superpoint_v1.pth'),
                     f'{DOWNLOAD_COMMAND} superpoint'):
        assert fragment in message, (fragment, message)
    shutil.copy(files['superpoint_pth'], tmp_path / 'superpoint_v1.pth')
    assert same_state(load_superpoint(None, superglue_spec=files['superglue_pth']), confident_weights()[0])


# ---------------------------------------------------------------------------------------------
# Checkpoints saved by training code

def test_wrapped_checkpoints_load_exactly(tmp_path):
    """(Distributed)DataParallel's 'module.' prefix and the {'state_dict': ...} / {'model': ...} wrappers."""
    superpoint_state, superglue_state = confident_weights()
    model = SuperPoint()
    model.load_state_dict(superpoint_state)
    parallel = torch.nn.DataParallel(model).state_dict()  # as saved from a DataParallel model
    assert all(k.startswith('module.') for k in parallel)
    cases = {
        'superpoint_parallel': (parallel, superpoint_state, load_superpoint),
        'superpoint_state_dict': ({'state_dict': parallel, 'epoch': 7, 'best_loss': 0.25}, superpoint_state,
                                  load_superpoint),
        'superglue_model': ({'model': dict(superglue_state), 'optimizer': {'state': {}, 'param_groups': []},
                             'step': 1000}, superglue_state, load_superglue),
        'superglue_ddp_model': ({'model': {f'module.{k}': v for k, v in superglue_state.items()}}, superglue_state,
                                load_superglue),
    }
    for name, (content, expected, load) in cases.items():
        path = tmp_path / f'{name}.pth'
        torch.save(content, path)
        assert same_state(load(path), expected), name


def test_other_wrappers_are_refused(tmp_path):
    superpoint_state = confident_weights()[0]
    for name, content in {'net': {'net': dict(superpoint_state)}, 'list': {'state_dict': list(superpoint_state)},
                          'nested': {'model': {'state_dict': dict(superpoint_state)}}}.items():
        path = tmp_path / f'{name}.pth'
        torch.save(content, path)
        with pytest.raises(WeightsError, match=r"is not a state dict \(name -> tensor\), nor one wrapped in "
                                               r"\{'state_dict': ..., 'model': ...\}"):
            load_superpoint(path)
    lightning = tmp_path / 'lightning.pth'  # another prefix: not guessed
    torch.save({'state_dict': {f'net.{k}': v for k, v in superpoint_state.items()}}, lightning)
    with pytest.raises(WeightsError, match='no SuperPoint or SuperGlue tensors.*net.conv1a.bias'):
        load_superpoint(lightning)


# ---------------------------------------------------------------------------------------------
# Hugging Face hub ids

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout, not an installed copy
COMMIT_A, COMMIT_B = 'a' * 40, '0123456789abcdef' * 2 + '01234567'


def digest(state: dict) -> str:
    """sha256 over the names and bytes of a state dict."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


HUB_PROBE = """
import hashlib, json, sys
from superglue_ros.weights import WeightsError, load_superglue, load_superpoint
def digest(state):
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()
out = {}
for label, load, spec in json.loads(sys.argv[1]):
    try:
        model = load_superglue(spec) if load == 'superglue' else load_superpoint(
            spec if load == 'superpoint' else None, superglue_spec=spec)
        out[label] = digest(model.state_dict())
    except WeightsError as e:
        out[label] = 'WeightsError: ' + str(e)
# the demo checks its weights specs the same way, and passes a hub id on as its snapshot directory
import argparse, contextlib, io
from superglue_ros.demo.__main__ import official_weights
for label, specs in json.loads(sys.argv[2]).items():
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        out[label] = official_weights(argparse.Namespace(superpoint_weights=specs[0], superglue_weights=specs[1]))
    out[label + '_stderr'] = stderr.getvalue()
print(json.dumps(out))
"""


@pytest.fixture(scope='module')
def hub_home(tmp_path_factory):
    """HF_HOME with magic-leap-community/superglue_indoor (main -> commit A; tag v2 -> commit B, whose
    bin_score differs) and magic-leap-community/superpoint; superglue_outdoor is not cached."""
    superpoint_state, superglue_state = confident_weights()
    root = tmp_path_factory.mktemp('hub')
    changed = {**superglue_state, 'bin_score': superglue_state['bin_score'] + 1}
    home = root / 'hf_home'
    add_checkpoint(home, 'magic-leap-community/superglue_indoor', COMMIT_A,
                   write_hf_superglue(root / 'a', superglue_state, superpoint_state))
    add_checkpoint(home, 'magic-leap-community/superglue_indoor', COMMIT_B,
                   write_hf_superglue(root / 'b', changed, superpoint_state), refs=('v2',))
    add_checkpoint(home, 'magic-leap-community/superpoint', COMMIT_A,
                   write_hf_superpoint(root / 'sp', superpoint_state))
    return home, {'superpoint': digest(superpoint_state), 'a': digest(superglue_state), 'b': digest(changed)}


def test_hub_ids_resolve_from_the_cache_offline(hub_home, tmp_path):
    """In a fresh process with HF_HOME and HF_HUB_OFFLINE=1: the main branch, a pinned commit, a tag, the
    SuperPoint inside a SuperGlue hub checkpoint, a SuperPoint hub checkpoint; ids that are not cached;
    the demo's check of its weights."""
    home, expected = hub_home
    indoor, outdoor = 'magic-leap-community/superglue_indoor', 'magic-leap-community/superglue_outdoor'
    cases = [('main', 'superglue', indoor), ('commit', 'superglue', f'{indoor}@{COMMIT_B}'),
             ('tag', 'superglue', f'{indoor}@v2'), ('inside', 'from_superglue', f'{indoor}@{COMMIT_A}'),
             ('superpoint', 'superpoint', 'magic-leap-community/superpoint'),
             ('missing', 'superglue', outdoor), ('missing_commit', 'superglue', f'{indoor}@{"f" * 40}'),
             ('unknown', 'superglue', 'someone/no_such_weights')]
    demo = {'demo': ['magic-leap-community/superpoint', f'{indoor}@v2'], 'demo_missing': ['superpoint', outdoor]}
    env = {**hub_env(home), 'SUPERGLUE_ROS_WEIGHTS_DIR': str(tmp_path)}  # no preset downloaded
    done = subprocess.run([sys.executable, '-c', HUB_PROBE, json.dumps(cases), json.dumps(demo)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert [got['main'], got['commit'], got['tag']] == [expected['a'], expected['b'], expected['b']]
    assert got['inside'] == got['superpoint'] == expected['superpoint']
    for label, spec in (('missing', outdoor), ('missing_commit', f'{indoor}@{"f" * 40}')):
        message = got[label]
        assert message.startswith('WeightsError: SuperGlue weights: hub id ') and '\n' not in message, message
        for fragment in (spec, str(home / 'hub'), 'not downloaded while loading', f'{DOWNLOAD_COMMAND} {spec}'):
            assert fragment in message, (fragment, message)
    assert "'someone/no_such_weights' is no local path, and as a Hugging Face hub id" in got['unknown']
    snapshots = home / 'hub' / 'models--magic-leap-community--{}' / 'snapshots'
    assert got['demo'] == [str(snapshots).format('superpoint') + f'/{COMMIT_A}',
                           str(snapshots).format('superglue_indoor') + f'/{COMMIT_B}']
    assert got['demo_missing'] is None and got['demo_stderr'] == ''
    for fragment in ("preset 'superpoint' is not downloaded", f'hub id {outdoor}',
                     f'{DOWNLOAD_COMMAND} superpoint {outdoor}', '--random-weights'):
        assert fragment in got['demo_missing_stderr'], (fragment, got['demo_missing_stderr'])


def test_paths_are_never_hub_ids(tmp_path, monkeypatch):
    """A local directory named like a hub id is used as the directory; missing weight files stay missing files."""
    from superglue_ros.download import parse_hub_id
    monkeypatch.chdir(tmp_path)
    write_hf_superpoint(tmp_path / 'magic-leap-community' / 'superpoint', confident_weights()[0])
    assert parse_hub_id('magic-leap-community/superpoint') is None
    assert same_state(load_superpoint('magic-leap-community/superpoint'), confident_weights()[0])
    assert parse_hub_id('magic-leap-community/superglue_indoor@main') == ('magic-leap-community/superglue_indoor',
                                                                           'main')
    for spec in ('weights/superglue.pth', './owner/name', 'owner/name/extra', 'name'):
        assert parse_hub_id(spec) is None, spec
    with pytest.raises(WeightsError, match='weights/superglue.pth does not exist'):
        load_superglue('weights/superglue.pth')


def test_missing_unexpected_and_misshapen_keys(tmp_path):
    superpoint_state, superglue_state = confident_weights()
    missing = dict(superglue_state)
    del missing['gnn.layers.3.attn.merge.bias'], missing['bin_score']
    with pytest.raises(WeightsError, match=r'missing keys: bin_score, gnn.layers.3.attn.merge.bias'):
        load_superglue(write_original(tmp_path / 'missing.pth', missing))

    extra = {**superpoint_state, 'convX.weight': torch.zeros(1)}
    with pytest.raises(WeightsError, match=r'unexpected keys: convX.weight'):
        load_superpoint(write_original(tmp_path / 'extra.pth', extra))

    more_layers = {**superglue_state, **{k.replace('layers.17.', 'layers.18.'): v
                                         for k, v in superglue_state.items() if 'layers.17.' in k}}
    with pytest.raises(WeightsError, match=r'unexpected keys: gnn.layers.18.'):
        load_superglue(write_original(tmp_path / 'more.pth', more_layers))

    with pytest.raises(WeightsError, match=r'shapes differ: convDb.weight: checkpoint \(256, 256, 1, 1\), '
                                           r'model \(128, 256, 1, 1\)'):
        load_superpoint(write_original(tmp_path / 'sp.pth', superpoint_state), {'descriptor_dim': 128})

    hf_state = superglue_to_hf(superglue_state)
    del hf_state['final_projection.final_proj.bias']
    save_file(hf_state, tmp_path / 'partial.safetensors')
    with pytest.raises(WeightsError, match=r'missing keys: final_proj.bias'):
        load_superglue(tmp_path / 'partial.safetensors')

    hf_superpoint_state = superpoint_to_hf(superpoint_state)
    hf_superpoint_state['descriptor_decoder.extra.weight'] = torch.zeros(2)
    save_file(hf_superpoint_state, tmp_path / 'sp_extra.safetensors')
    with pytest.raises(WeightsError, match=r'unexpected keys: descriptor_decoder.extra.weight'):
        load_superpoint(tmp_path / 'sp_extra.safetensors')


@pytest.mark.parametrize('change, message', [
    ({'model_type': 'bert'}, "model_type 'bert'"),
    ({'model_type': 'superpoint'}, "model_type 'superpoint' but the tensors"),
    ({'num_attention_heads': 3}, 'unusable SuperGlue architecture'),
    ({'gnn_layers_types': ['self', 'diagonal']}, 'unusable SuperGlue architecture'),
    ({'hidden_size': 128}, 'tensor shapes differ'),
    ({'keypoint_detector_config': {'model_type': 'superpoint', 'encoder_hidden_sizes': [32, 32, 64, 64]}},
     'encoder_hidden_sizes'),
])
def test_wrong_hugging_face_config(files, tmp_path, change, message):
    directory = tmp_path / 'hf'
    shutil.copytree(files['superglue_hf'], directory)
    config = json.loads((directory / 'config.json').read_text())
    (directory / 'config.json').write_text(json.dumps({**config, **change}))
    with pytest.raises(WeightsError, match=message):
        if 'keypoint_detector_config' in change:
            load_superpoint(None, superglue_spec=directory)
        else:
            load_superglue(directory)


def test_safetensors_are_read_as_stored(files):
    """The published layout: Linear weights, heads-major attention channels (checked against the
    original: head h of the query projection is the original's channels d * 4 + h)."""
    stored = load_file(files['superglue_hf'] / 'model.safetensors')
    original = confident_weights()[1]['gnn.layers.2.attn.proj.0.weight'][..., 0]
    hf = stored['gnn.layers.2.attention.self.query.weight']
    assert hf.shape == (256, 256)
    for h in range(4):
        assert torch.equal(hf[h * 64:(h + 1) * 64], original[h::4])


def test_non_finite_weights_are_refused(tmp_path):
    state = dict(confident_weights()[0])
    state['convDb.weight'] = state['convDb.weight'].clone()
    state['convDb.weight'][0, 0, 0, 0] = float('nan')
    with pytest.raises(WeightsError, match=r'NaN or infinite values in convDb\.weight'):
        load_superpoint(write_original(tmp_path / 'nan.pth', state))
