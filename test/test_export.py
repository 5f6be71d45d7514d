"""ONNX export (python -m superglue_ros.export) and the onnxruntime backend of Matcher (runtime.py).

Checked: the command writes the four files and the sidecar from weights files, each file passes
onnx.checker; superpoint.onnx gives torch's dense maps at two sizes and a batch (dynamic axes);
superglue.onnx runs all the way to the matches of the torch model at two keypoint counts; the backend
exports once into the cache and a second Matcher starts from it without exporting; an export for other
weights or settings in its place is detected by its sidecar and exported again; onnxruntime's threads
follow torch's; every refusal is one line. The fidelity gate of the backend is in test_fidelity.py.
"""
import importlib.util
import json

import cv2
import numpy as np
import pytest
import torch

from model_fixtures import confident_weights, load_grey
from superglue_ros import export as export_module
from superglue_ros import runtime
from superglue_ros.demo.synthetic import generate_sequence
from superglue_ros.download import sha256_of
from superglue_ros.export import FILES, SIDECAR, ExportError, cached_export, export, main, state_sha256
from superglue_ros.matcher import Matcher, backend_choice, resolve_backend
from superglue_ros.models import SuperGlue, SuperPoint
from superglue_ros.random_weights import write_files
from superglue_ros.runtime import OnnxRuntimeBackend, RuntimeUnavailable, providers_for, tensorrt_profiles

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')


def models(sinkhorn_iterations: int = 20):
    superpoint, superglue = SuperPoint({'max_keypoints': 512}), SuperGlue({'sinkhorn_iterations': sinkhorn_iterations})
    superpoint.load_state_dict(confident_weights()[0])
    superglue.load_state_dict(confident_weights()[1])
    return superpoint.eval(), superglue.eval()


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    """An export cache of this module's own (SUPERGLUE_ROS_ONNX_DIR), shared by its tests."""
    directory = tmp_path_factory.mktemp('onnx_cache')
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('SUPERGLUE_ROS_ONNX_DIR', str(directory))
        yield directory


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    """Two 640x480 grey frames [1, 1, H, W] of the synthetic sequence with confident matches between them."""
    sequence = generate_sequence(tmp_path_factory.mktemp('synthetic'), num_frames=3, size=(640, 480), seed=0)
    return [load_grey(sequence.files[0]), load_grey(sequence.files[2])]


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """(directory, weights files) of `python -m superglue_ros.export` on random weights files."""
    superpoint_file, superglue_file = write_files(tmp_path_factory.mktemp('weights'))
    directory = tmp_path_factory.mktemp('export')
    assert main(['--superpoint-weights', str(superpoint_file), '--superglue-weights', str(superglue_file),
                 '--sinkhorn-iterations', '20', '--output', str(directory)]) == 0
    return directory, (superpoint_file, superglue_file)


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


def test_the_command_writes_checked_files_and_the_sidecar(exported):
    directory, (superpoint_file, superglue_file) = exported
    for name in FILES:
        onnx.checker.check_model(str(directory / name))
    sidecar = json.loads((directory / SIDECAR).read_text())
    assert sidecar['files'] == list(FILES) and sidecar['opset'] == export_module.OPSET
    assert sidecar['settings'] == {'sinkhorn_iterations': 20, 'match_threshold': 0.2}
    assert sidecar['shape_mode'] == 'dynamic' and sidecar['input_size'] is None
    for name, path in (('superpoint', superpoint_file), ('superglue', superglue_file)):
        assert sidecar['weights'][name]['sha256'] == sha256_of(path)
        assert sidecar['weights'][name]['file'] == str(path.resolve())
    superpoint, superglue = models()
    assert sidecar['weights']['superglue']['state_sha256'] == state_sha256(superglue)
    assert sidecar['key'] == export_module.key_of(sidecar)


def test_the_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    assert main(['--superglue-weights', str(tmp_path / 'missing.pth')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'missing.pth' in err and 'does not exist' in err
    assert main(['--sinkhorn-iterations', '0']) == 2
    assert 'sinkhorn_iterations must be an integer in [1, 1000]; got 0' in capsys.readouterr().err


def test_ctrl_c_during_the_command_is_one_line_and_leaves_no_export(exported, tmp_path, capsys, monkeypatch):
    """Ctrl-C while the files are written over an earlier export: one line, exit code 130, and the directory
    no longer passes for a complete export (its sidecar is gone), so the backend exports it again."""
    superpoint_file, superglue_file = exported[1]
    output = tmp_path / 'export'
    output.mkdir()
    for name in (*FILES, SIDECAR):  # an earlier, complete export
        (output / name).write_bytes((exported[0] / name).read_bytes())
    real_export, calls = torch.onnx.export, []

    def interrupted(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, 'export', interrupted)
    try:
        code = main(['--superpoint-weights', str(superpoint_file), '--superglue-weights', str(superglue_file),
                     '--sinkhorn-iterations', '20', '--output', str(output)])
    except KeyboardInterrupt:
        pytest.fail('Ctrl-C ended the command with a traceback')
    err = capsys.readouterr().err
    assert code == 130 and err.count('\n') == 1 and 'interrupted: the export is incomplete' in err
    assert export_module.read_sidecar(output) is None


def test_running_out_of_memory_in_a_static_export_says_to_lower_max_keypoints(exported, tmp_path, capsys,
                                                                              monkeypatch):
    """The exporter traces SuperGlue on max_keypoints x max_keypoints: out of memory there is not an opset
    problem."""
    superpoint_file, superglue_file = exported[1]
    real_export = torch.onnx.export

    def out_of_memory(module, *args, **kwargs):
        if isinstance(module, export_module.SuperGlueMatches):
            raise RuntimeError('[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can\'t allocate '
                               'memory: you tried to allocate 20480000 bytes. Error code 12 (Cannot allocate memory)')
        return real_export(module, *args, **kwargs)

    monkeypatch.setattr(torch.onnx, 'export', out_of_memory)
    assert main(['--superpoint-weights', str(superpoint_file), '--superglue-weights', str(superglue_file),
                 '--shape-mode', 'static', '--max-keypoints', '20000', '--input-size', '64', '64',
                 '--sinkhorn-iterations', '2', '--output', str(tmp_path / 'export')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'out of host memory while exporting superglue.onnx' in err
    assert 'of 20000 keypoints): lower --max-keypoints' in err and 'opset' not in err


def test_an_opset_the_graphs_cannot_take_is_one_line(exported, tmp_path, capfd):
    """Refused before exporting: torch's exporter prints its whole graph to stderr when it fails on an opset."""
    superpoint_file, superglue_file = exported[1]
    for opset in ('13', '99'):
        assert main(['--superpoint-weights', str(superpoint_file), '--superglue-weights', str(superglue_file),
                     '--opset', opset, '--output', str(tmp_path / opset)]) == 2
        err = capfd.readouterr().err
        assert err.count('\n') == 1 and f'cannot export to opset {opset}: the graphs need opset 14 or newer' in err
        assert 'give --opset 14 to ' in err and not (tmp_path / opset).exists()


@torch.inference_mode()
def test_superpoint_onnx_gives_the_dense_maps_at_any_size(exported):
    superpoint, _ = models()
    sp = session(exported[0] / 'superpoint.onnx')
    for image in (torch.rand(1, 1, 480, 640), torch.rand(2, 1, 244, 324)):  # 324 x 244: not a multiple of 8
        features = superpoint.encode(image)
        scores, descriptors = sp.run(None, {'image': image.numpy()})
        assert scores.shape == tuple(superpoint.dense_scores(features).shape)
        assert np.abs(scores - superpoint.dense_scores(features).numpy()).max() < 1e-5
        assert np.abs(descriptors - superpoint.descriptor_map(features).numpy()).max() < 1e-5


@torch.inference_mode()
def test_superglue_onnx_runs_to_the_matches(exported, images):
    """The whole graph, Sinkhorn and the mutual check included, at two keypoint counts (dynamic axes)."""
    superpoint, superglue = models()
    sg = session(exported[0] / 'superglue.onnx')
    features = [superpoint(image) for image in images]
    for n in (512, 300):
        inputs = {}
        for i, f in enumerate(features):
            count = n if i == 0 else 512
            inputs.update({f'keypoints{i}': f['keypoints'][0][None, :count], f'scores{i}': f['scores'][0][None, :count],
                           f'descriptors{i}': f['descriptors'][0][None, :, :count],
                           f'image_size{i}': torch.tensor([640.0, 480.0])})
        matches0, matches1, scores0, scores1 = sg.run(None, {k: v.numpy() for k, v in inputs.items()})
        expected = superglue({**inputs, 'image_size0': (640, 480), 'image_size1': (640, 480)})
        assert matches0.shape == (1, n) and (matches0 > -1).sum() > 100
        assert (matches0 == expected['matches0'].numpy()).mean() > 0.99
        same = matches0 == expected['matches0'].numpy()
        assert np.abs(scores0 - expected['matching_scores0'].numpy())[same].max() < 1e-4


def test_the_backend_exports_once_and_starts_from_the_cache(cache, images):
    lines = []
    first = Matcher(*models(), device='cpu', backend='onnxruntime', log=lines.append)
    assert len(lines) == 1 and 'exporting the models to ONNX' in lines[0] and 'not exported yet' in lines[0]
    assert first.runtime.directory.parent == cache
    second = Matcher(*models(), device='cpu', backend='onnxruntime', log=lines.append)
    assert len(lines) == 1 and second.runtime.directory == first.runtime.directory  # no second export
    other = Matcher(*models(sinkhorn_iterations=30), device='cpu', backend='onnxruntime', log=lines.append)
    assert len(lines) == 2 and other.runtime.directory != first.runtime.directory  # other settings, own export

    frame = (images[0][0, 0] * 255).to(torch.uint8).numpy()
    features = first.extract(frame)
    assert len(features.scores) == 512 and first.match(features, first.extract(frame)).pairs()[0].size > 400


def test_an_export_for_other_weights_is_detected_and_exported_again(cache):
    superpoint, superglue = models()
    directory = cached_export(superpoint, superglue)
    sidecar = json.loads((directory / SIDECAR).read_text())
    sidecar['weights']['superglue']['state_sha256'] = '0' * 64  # as if written for other weights
    (directory / SIDECAR).write_text(json.dumps(sidecar))
    lines = []
    assert cached_export(superpoint, superglue, lines.append) == directory
    assert 'was exported for other weights or settings: superglue weights sha256 000000000000...' in lines[0]
    assert json.loads((directory / SIDECAR).read_text())['weights']['superglue']['state_sha256'] == \
        state_sha256(superglue)
    (directory / 'superglue_scores.onnx').unlink()
    lines.clear()
    cached_export(superpoint, superglue, lines.append)
    assert 'lacks superglue_scores.onnx' in lines[0] and (directory / 'superglue_scores.onnx').is_file()


def test_a_sidecar_of_another_layout_is_detected_and_exported_again(cache):
    """A sidecar that is JSON but not of this layout (another format, a damaged or hand-edited one) is a
    reason to export again, not a crash."""
    superpoint, superglue = models()
    directory = cached_export(superpoint, superglue)
    for weights in ([{'name': 'superglue'}], {'superglue': 'abc', 'superpoint': None}):
        sidecar = json.loads((directory / SIDECAR).read_text())
        (directory / SIDECAR).write_text(json.dumps({**sidecar, 'format': 2, 'weights': weights}))
        lines = []
        assert cached_export(superpoint, superglue, lines.append) == directory
        assert len(lines) == 1 and 'was exported for other weights or settings: format 2 (wanted 1)' in lines[0]
        assert 'superglue weights sha256 None... (wanted' in lines[0]
        assert json.loads((directory / SIDECAR).read_text())['format'] == export_module.FORMAT


def test_onnxruntime_threads_follow_torch(cache):
    backend = OnnxRuntimeBackend(*models(), torch.device('cpu'))
    threads = torch.get_num_threads()
    for session_ in backend.sessions().values():
        assert int(session_.get_session_options().intra_op_num_threads) == threads
        assert session_.get_providers() == ['CPUExecutionProvider']


def test_auto_is_onnxruntime_on_a_cpu_in_fp32_where_installed_and_torch_elsewhere(cache, monkeypatch):
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert Matcher(*models(), device='cpu', backend='auto').backend == 'onnxruntime'
    assert resolve_backend('auto', cpu, 'fp32') == 'onnxruntime'
    assert resolve_backend('auto', cuda, 'fp32') == 'torch'            # unmeasured on GPUs
    assert resolve_backend('auto', cpu, 'bf16') == 'torch'             # onnxruntime runs fp32 only
    assert resolve_backend('auto', cpu, 'fp32', static_shapes=True) == 'torch'
    assert resolve_backend('torch', cpu, 'fp32') == 'torch'
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)  # onnxruntime not installed
    assert resolve_backend('auto', cpu, 'fp32') == 'torch'
    assert resolve_backend('onnxruntime', cpu, 'fp32') == 'onnxruntime'  # asked for: refused later, in one line


def test_auto_falls_back_to_torch_where_onnxruntime_is_installed_but_does_not_import(cache, monkeypatch, tmp_path):
    """A broken onnxruntime install (found, but its import fails: a missing shared library) made a preset's
    backend 'auto' stop the node with "needs the onnxruntime package"; auto now runs torch and says why."""
    cpu, spec = torch.device('cpu'), importlib.util.find_spec('onnxruntime')
    assert backend_choice('auto', cpu, 'fp32')[0] == 'onnxruntime'
    assert backend_choice('torch', cpu, 'fp32') == ('torch', '')
    assert 'static_shapes' in backend_choice('auto', cpu, 'fp32', static_shapes=True)[1]
    assert 'fp32 only' in backend_choice('auto', cpu, 'bf16')[1]
    real_import = __builtins__['__import__'] if isinstance(__builtins__, dict) else __builtins__.__import__

    def broken(name, *args, **kwargs):
        if name == 'onnxruntime':
            raise OSError('libonnxruntime.so.1: cannot open shared object file')
        return real_import(name, *args, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr('builtins.__import__', broken)
        backend, why = backend_choice('auto', cpu, 'fp32')
        assert backend == 'torch' and 'does not import (OSError: libonnxruntime.so.1' in why
        matcher = Matcher(*models(), device='cpu', backend='auto')
        assert matcher.backend == 'torch' and matcher.runtime is None and 'does not import' in matcher.backend_why
        matcher = Matcher.from_weights(*write_files(tmp_path), device='cpu', backend='auto')  # the node's way
        assert matcher.backend == 'torch' and 'does not import' in matcher.backend_why
        with pytest.raises(RuntimeUnavailable, match=r"^backend 'onnxruntime': onnxruntime does not import \(OSError"):
            runtime.import_onnxruntime()
    with monkeypatch.context() as patch:  # found by find_spec, import halted (a shim on PYTHONPATH, a blocked import)
        patch.setattr(importlib.util, 'find_spec', lambda name, *args: spec)
        patch.setitem(__import__('sys').modules, 'onnxruntime', None)
        assert backend_choice('auto', cpu, 'fp32')[0] == 'torch'
    with monkeypatch.context() as patch:
        patch.setattr(importlib.util, 'find_spec', lambda name, *args: None)
        assert backend_choice('auto', cpu, 'fp32') == ('torch', 'onnxruntime is not installed')


def test_refusals_are_one_line(cache, monkeypatch):
    with pytest.raises(ValueError, match=r"^backend 'onnxruntime' runs fp32 only .* got precision 'bf16': use"):
        Matcher(*models(), device='cpu', precision='bf16', backend='onnxruntime')
    with pytest.raises(RuntimeUnavailable, match=r"needs onnxruntime's CUDAExecutionProvider, but this onnxruntime "
                                                 r'has only CPUExecutionProvider: pip install onnxruntime-gpu'):
        providers_for(torch.device('cuda'), ['CPUExecutionProvider'])
    assert providers_for(torch.device('cuda'), ['TensorrtExecutionProvider', 'CUDAExecutionProvider',
                                                'CPUExecutionProvider']) == ['TensorrtExecutionProvider',
                                                                             'CUDAExecutionProvider']

    def no_onnxruntime(name, *args, **kwargs):
        if name == 'onnxruntime':
            raise ImportError('No module named onnxruntime')
        return real_import(name, *args, **kwargs)
    real_import = __builtins__['__import__'] if isinstance(__builtins__, dict) else __builtins__.__import__
    with monkeypatch.context() as patch:
        patch.setattr('builtins.__import__', no_onnxruntime)
        with pytest.raises(RuntimeUnavailable, match=r"^backend 'onnxruntime' needs the onnxruntime package: pip"):
            runtime.import_onnxruntime()

    def failing_export(*args, **kwargs):
        raise RuntimeError('Unsupported: ONNX export of operator foo\nmore lines')
    monkeypatch.setattr(torch.onnx, 'export', failing_export)
    with pytest.raises(ExportError) as error:
        export(*models(), cache / 'failing')
    message = str(error.value)
    assert '\n' not in message and message.startswith('exporting superpoint.onnx failed (RuntimeError: Unsupported')
    assert 'backend torch' in message


@torch.inference_mode()
def test_a_static_export_pads_without_changing_anything(tmp_path, images, capsys):
    """--shape-mode static: fixed shapes; keypoints padded to --max-keypoints with a mask give the matches
    and scores of the unpadded images (torch), and padded keypoints get match -1 and score 0."""
    superpoint_file, superglue_file = write_files(tmp_path / 'weights')
    weights = ['--superpoint-weights', str(superpoint_file), '--superglue-weights', str(superglue_file)]
    assert main([*weights, '--shape-mode', 'static', '--max-keypoints', '512']) == 2
    assert 'static shapes need the image size: give --input-size WIDTH HEIGHT' in capsys.readouterr().err
    assert main([*weights, '--input-size', '640', '480']) == 2
    assert '--max-keypoints and --input-size fix the shapes of --shape-mode static' in capsys.readouterr().err
    assert main([*weights, '--shape-mode', 'static', '--max-keypoints', '512', '--input-size', '640', '480',
                 '--sinkhorn-iterations', '20', '--output', str(tmp_path / 'static')]) == 0
    sidecar = json.loads((tmp_path / 'static' / SIDECAR).read_text())
    assert (sidecar['shape_mode'], sidecar['input_size'], sidecar['max_keypoints']) == ('static', [640, 480], 512)
    for name in FILES:
        model = onnx.load(str(tmp_path / 'static' / name))
        onnx.checker.check_model(model)
        for value in list(model.graph.input) + list(model.graph.output):  # every dimension fixed
            assert all(d.HasField('dim_value') for d in value.type.tensor_type.shape.dim), (name, value.name)

    superpoint, superglue = models()
    features = [superpoint(image) for image in images]
    sg = session(tmp_path / 'static' / 'superglue.onnx')
    n, m = 300, 512
    generator = torch.Generator().manual_seed(0)
    inputs, unpadded = {}, {}
    for i, (f, real) in enumerate(zip(features, (n, m))):
        keypoints, scores, descriptors = f['keypoints'][0][None, :real], f['scores'][0][None, :real], \
            f['descriptors'][0][None, :, :real]
        unpadded.update({f'keypoints{i}': keypoints, f'scores{i}': scores, f'descriptors{i}': descriptors,
                         f'image_size{i}': (640, 480)})
        extra = 512 - real
        inputs.update({f'keypoints{i}': torch.cat([keypoints, torch.rand(1, extra, 2, generator=generator) * 600], 1),
                       f'scores{i}': torch.cat([scores, torch.rand(1, extra, generator=generator)], 1),
                       f'descriptors{i}': torch.cat([descriptors, torch.randn(1, 256, extra, generator=generator)], 2),
                       f'image_size{i}': torch.tensor([640.0, 480.0]), f'mask{i}': torch.arange(512)[None] < real})
    matches0, matches1, scores0, scores1 = sg.run(None, {k: v.numpy() for k, v in inputs.items()})
    expected = superglue(unpadded)
    assert (matches0[:, n:] == -1).all() and (scores0[:, n:] == 0).all()
    assert (matches0[:, :n] > -1).sum() > 100
    for ours, theirs, real in ((matches0, expected['matches0'], n), (matches1, expected['matches1'], m)):
        assert (ours[:, :real] == theirs.numpy()).mean() > 0.99
    same = matches0[:, :n] == expected['matches0'].numpy()
    assert np.abs(scores0[:, :n] - expected['matching_scores0'].numpy())[same].max() < 1e-4


def test_a_file_onnxruntime_refuses_is_named_in_one_line(cache):
    superpoint, superglue = models()
    directory = cached_export(superpoint, superglue)
    good = (directory / 'superglue_scores.onnx').read_bytes()
    (directory / 'superglue_scores.onnx').write_bytes(b'not a model')  # sidecar intact: only loading can tell
    try:
        with pytest.raises(RuntimeUnavailable) as error:
            OnnxRuntimeBackend(superpoint, superglue, torch.device('cpu'))
        message = str(error.value)
        assert '\n' not in message and f'cannot load {directory / "superglue_scores.onnx"}' in message
        assert f'delete {directory} to export again' in message
    finally:
        (directory / 'superglue_scores.onnx').write_bytes(good)


def test_the_cli_runs_either_backend(cache, tmp_path, images, exported):
    """python -m superglue_ros.match --backend onnxruntime: through the same Matcher, the torch backend's result."""
    from superglue_ros import match

    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f'{i}.png')
        assert cv2.imwrite(str(paths[-1]), (image[0, 0] * 255).round().to(torch.uint8).numpy())
    superpoint_file, superglue_file = exported[1]
    results = {}
    for backend in ('torch', 'onnxruntime'):
        out = tmp_path / f'{backend}.json'
        assert match.main([*map(str, paths), '--superpoint-weights', str(superpoint_file), '--superglue-weights',
                           str(superglue_file), '--max-keypoints', '256', '--sinkhorn-iterations', '20',
                           '--backend', backend, '--json', str(out)]) == 0
        results[backend] = json.loads(out.read_text())
    torch_run, ort_run = results['torch'], results['onnxruntime']
    assert ort_run['keypoints0'] == torch_run['keypoints0'] and ort_run['keypoints1'] == torch_run['keypoints1']
    matches = np.array(torch_run['matches0'])
    assert (matches > -1).sum() > 100 and (np.array(ort_run['matches0']) == matches).mean() > 0.99


def test_tensorrt_profiles_cover_the_keypoint_axes_and_the_resize():
    """The TensorRT shape profiles (unverified here: no GPU): every dynamic input of each file, no engine
    rebuild for 1 to 4096 keypoints, SuperPoint fixed at the resize."""
    scores = tensorrt_profiles('superglue_scores.onnx', 256, None, None)
    assert scores == {'trt_profile_min_shapes': 'encoded0:1x256x1,encoded1:1x256x1',
                      'trt_profile_opt_shapes': 'encoded0:1x256x1024,encoded1:1x256x1024',
                      'trt_profile_max_shapes': 'encoded0:1x256x4096,encoded1:1x256x4096'}
    encode = tensorrt_profiles('superglue_encode.onnx', 256, None, None)['trt_profile_max_shapes']
    assert encode == 'keypoints:1x4096x2,scores:1x4096,descriptors:1x256x4096'
    assert set(tensorrt_profiles('superpoint.onnx', 256, (640, 480), None).values()) == {'image:1x1x480x640'}
    assert tensorrt_profiles('superpoint.onnx', 256, None, None) == {}
    assert tensorrt_profiles('superglue_scores.onnx', 256, None, (512, (640, 480))) == {}


def test_onnxruntime_running_out_of_memory_is_a_resource_error():
    """onnxruntime's allocation failure (its own exception type) becomes the one-line ResourceError of the
    frame path, as torch's does."""
    from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

    from superglue_ros.matcher import ResourceError, memory_guard

    error = RuntimeException('[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running '
                             'MatMul node. Status Message: Failed to allocate memory for requested buffer of size 4096')
    with pytest.raises(ResourceError, match=r'^out of host memory while matching 9 x 9 keypoints on cpu: lower x$'):
        with memory_guard(torch.device('cpu'), 'matching 9 x 9 keypoints', 'x'):
            raise error
    with pytest.raises(RuntimeException):  # any other onnxruntime failure is not one
        with memory_guard(torch.device('cpu'), 'matching', 'x'):
            raise RuntimeException('[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions')


def test_a_detection_mask_works_the_same_in_both_backends(cache, images):
    """masks (issue 15) go through SuperPoint.keypoints_from_maps -> select_keypoints in either backend: the
    onnxruntime backend's keypoints under a mask are the torch backend's, none in the masked area."""
    from superglue_ros.pipeline import CameraPipeline

    frame = (images[0][0, 0] * 255).to(torch.uint8).numpy()
    mask = np.ones(frame.shape, bool)
    mask[:, :200] = False
    keypoints = {}
    for backend in ('torch', 'onnxruntime'):
        camera = CameraPipeline(Matcher(*models(), device='cpu', backend=backend), mask=mask)
        keypoints[backend] = camera.process(frame, 1.0).frame_features.keypoints_original()
    assert len(keypoints['torch']) == 512 and keypoints['torch'][:, 0].min() >= 200
    np.testing.assert_array_equal(keypoints['onnxruntime'], keypoints['torch'])


def test_the_command_exports_hugging_face_weights_as_the_same_graphs(tmp_path, exported):
    """A Hugging Face SuperGlue checkpoint directory (with its SuperPoint inside, as magic-leap-community/
    superglue_indoor ships it) exports to checked files whose weights are those of the same .pth files: the
    sidecar's state_sha256 of each model agrees with the .pth export's, and the graphs give the same maps."""
    from model_fixtures import write_hf_superglue
    from superglue_ros.weights import load_superglue, load_superpoint

    directory_pth, (superpoint_file, superglue_file) = exported
    state_superpoint, state_superglue = (torch.load(path, weights_only=True) for path in (superpoint_file, superglue_file))
    checkpoint = write_hf_superglue(tmp_path / 'hf_superglue', state_superglue, state_superpoint)
    output = tmp_path / 'export'
    assert main(['--superglue-weights', str(checkpoint), '--sinkhorn-iterations', '20', '--output', str(output)]) == 0
    for name in FILES:
        onnx.checker.check_model(str(output / name))
    hf, pth = (json.loads((d / SIDECAR).read_text()) for d in (output, directory_pth))
    for name in ('superpoint', 'superglue'):
        assert hf['weights'][name]['state_sha256'] == pth['weights'][name]['state_sha256']
    assert hf['weights']['superglue']['state_sha256'] == state_sha256(load_superglue(str(checkpoint)))
    assert hf['weights']['superpoint']['state_sha256'] == state_sha256(load_superpoint(None, superglue_spec=str(checkpoint)))
    image = np.random.default_rng(0).random((1, 1, 96, 128), dtype=np.float32)
    maps = [session(d / 'superpoint.onnx').run(None, {session(d / 'superpoint.onnx').get_inputs()[0].name: image})
            for d in (output, directory_pth)]
    for a, b in zip(*maps):
        np.testing.assert_array_equal(a, b)
