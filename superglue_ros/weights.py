"""Load SuperPoint / SuperGlue weights from the two published formats, with exact errors.

A weights spec (the same everywhere: CLI, node parameters, demo) is one of
  - a preset name: 'superpoint', 'indoor', 'outdoor' (files in weights_cache_dir(), fetched with
    `python -m superglue_ros.download`);
  - an original .pth state dict of magicleap/SuperGluePretrainedNetwork (superpoint_v1.pth,
    superglue_indoor.pth, superglue_outdoor.pth), also as saved by training code: wrapped in
    {'state_dict': ...} or {'model': ...}, and/or with the 'module.' prefix of DataParallel /
    DistributedDataParallel (stripped as torch.nn.modules.utils.consume_prefix_in_state_dict_if_present does);
  - a Hugging Face checkpoint as published for magic-leap-community/superpoint and
    magic-leap-community/superglue_{indoor,outdoor}: a directory with config.json and
    model.safetensors, or the .safetensors file alone. A Hugging Face SuperGlue checkpoint
    contains its SuperPoint (keypoint_detector.*), so it serves as both;
  - a Hugging Face hub id owner/name[@revision] of such a checkpoint, e.g.
    magic-leap-community/superglue_indoor@<commit>, resolved by huggingface_hub in its own cache
    (download.hub_snapshot: HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE). A string is a hub id only when
    no such local path exists and it does not end in a weights-file suffix (download.parse_hub_id).

Hugging Face checkpoints are converted to the original layout: Linear -> Conv1d (kernel 1),
renamed modules, and the attention heads reordered (original: channel d * heads + h; Hugging Face:
h * head_dim + d). The checkpoint fixes the architecture (config.json where present, otherwise the
tensor shapes must fit `config`); detection and matching settings always come from `config`.
Files are read with torch.load(weights_only=True) or safetensors: no pickled code is executed.
"""
import json
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from .download import (DOWNLOAD_COMMAND, OFFICIAL_HUB_IDS, PRESETS, DownloadError, hub_snapshot, parse_hub_id,
                       preset_path, weights_cache_dir)
from .models import SuperGlue, SuperPoint
from .models.superglue import check_superglue_config

__all__ = ['WeightsError', 'PRESETS', 'weights_cache_dir', 'load_superpoint', 'load_superglue']


class WeightsError(Exception):
    """Weights that cannot be used; the message says the path tried, what is wrong and what to do."""


FORMATS_HINT = ('an original .pth state dict, a Hugging Face checkpoint directory (config.json + model.safetensors), '
                'a .safetensors file, a Hugging Face hub id (owner/name[@revision]) or a preset '
                f'({", ".join(PRESETS)})')
PRESET_MODELS = {'superpoint': 'SuperPoint', 'indoor': 'SuperGlue', 'outdoor': 'SuperGlue'}
WRAPPER_KEYS = ('state_dict', 'model')  # training checkpoints: {'state_dict': weights, 'epoch': ..., ...}
PARALLEL_PREFIX = 'module.'             # DataParallel / DistributedDataParallel parameter names


@dataclass
class Checkpoint:
    path: Path
    tensors: dict              # name -> Tensor, as stored
    hf_config: dict | None     # config.json of a Hugging Face directory
    model: str                 # 'superpoint' | 'superglue'
    layout: str                # 'original' | 'hf'

    def describe(self) -> str:
        layout = 'original .pth' if self.layout == 'original' else 'Hugging Face'
        return f'{self.path} ({layout} {"SuperPoint" if self.model == "superpoint" else "SuperGlue"} checkpoint)'


def superpoint_source(superglue_spec) -> str | Path:
    """Where SuperPoint comes from when no SuperPoint weights are given, as the original release pairs
    them: superglue_spec itself when it is a Hugging Face SuperGlue checkpoint or hub id holding one
    (keypoint_detector.*), else the 'superpoint' preset (superglue_spec a preset, or an original .pth,
    which holds no SuperPoint). WeightsError when superglue_spec cannot be read or is a SuperPoint checkpoint."""
    return superglue_spec if holds_superpoint(superglue_checkpoint(superglue_spec)) else 'superpoint'


def superglue_checkpoint(superglue_spec) -> 'Checkpoint | None':
    """The checkpoint of superglue_spec, None for a preset (an original file: no SuperPoint in it).
    WeightsError when it cannot be read or is a SuperPoint checkpoint."""
    if isinstance(superglue_spec, str) and superglue_spec in PRESETS:
        return None
    checkpoint = read_checkpoint(superglue_spec, 'SuperGlue')
    if checkpoint.model != 'superglue':
        raise not_superglue(checkpoint)
    return checkpoint


def holds_superpoint(checkpoint: 'Checkpoint | None') -> bool:
    """A Hugging Face SuperGlue checkpoint with its SuperPoint (keypoint_detector.*)."""
    return checkpoint is not None and any(k.startswith('keypoint_detector.') for k in checkpoint.tensors)


def not_superglue(checkpoint: 'Checkpoint') -> 'WeightsError':
    """The error for a SuperPoint checkpoint given as the SuperGlue weights."""
    return WeightsError(f'{checkpoint.describe()} is a SuperPoint checkpoint, not SuperGlue weights: pass it as '
                        f"the SuperPoint weights, and SuperGlue weights here (e.g. the preset 'indoor')")


def load_superpoint(spec: str | Path | None, config: dict | None = None, superglue_spec=None) -> SuperPoint:
    """SuperPoint in eval mode from a weights spec (see the module doc); spec None: from superglue_spec
    (superpoint_source). WeightsError (one line: what is wrong, what to do) for weights that cannot be used."""
    if spec is None:
        if superglue_spec is None:
            raise WeightsError(f'no SuperPoint weights given: pass {FORMATS_HINT}')
        check_preset_model(superglue_spec, 'SuperGlue')
        checkpoint = superglue_checkpoint(superglue_spec)  # read once: it may hold the SuperPoint
        if holds_superpoint(checkpoint):
            return superpoint_from(checkpoint, config)
        try:
            return superpoint_from(read_checkpoint('superpoint', 'SuperPoint'), config)
        except WeightsError as e:
            why = (f"the SuperGlue weights are the preset '{superglue_spec}'" if checkpoint is None else
                   f'the SuperGlue weights {checkpoint.describe()} hold none')
            raise WeightsError(f"no SuperPoint weights given and {why}, so the preset 'superpoint' is used: "
                               f'{e}') from None
    return superpoint_from(read_checkpoint(spec, 'SuperPoint'), config)


def load_superglue(spec: str | Path, config: dict | None = None) -> SuperGlue:
    """SuperGlue in eval mode from a weights spec (see the module doc). WeightsError (one line: what is wrong,
    what to do) for weights that cannot be used."""
    if spec is None:
        raise WeightsError(f'no SuperGlue weights given: pass {FORMATS_HINT}')
    checkpoint = read_checkpoint(spec, 'SuperGlue')
    if checkpoint.model != 'superglue':
        raise not_superglue(checkpoint)
    tensors = {k: v for k, v in checkpoint.tensors.items() if not k.startswith('keypoint_detector.')}
    architecture = {}
    if checkpoint.layout == 'hf':
        architecture = superglue_architecture(checkpoint)
    config = merge_architecture(config, architecture, checkpoint)
    try:
        model = SuperGlue(config)
    except ValueError as e:
        raise WeightsError(f'cannot build SuperGlue for {checkpoint.describe()}: {e}') from None
    if checkpoint.layout == 'hf':
        tensors = superglue_from_hf(tensors, model.config['num_heads'], len(model.config['keypoint_encoder']))
    return fill(model, tensors, checkpoint)


def superpoint_from(checkpoint: Checkpoint, config: dict | None) -> SuperPoint:
    tensors, architecture = checkpoint.tensors, {}
    if checkpoint.model == 'superglue':
        if checkpoint.layout == 'original':
            raise WeightsError(f'{checkpoint.describe()} is a SuperGlue checkpoint, not SuperPoint weights (an '
                               f'original SuperGlue .pth holds no SuperPoint): pass SuperPoint weights, e.g. the '
                               f"preset 'superpoint'")
        tensors = {k[len('keypoint_detector.'):]: v for k, v in tensors.items() if k.startswith('keypoint_detector.')}
        if not tensors:
            raise WeightsError(f'{checkpoint.describe()} contains no SuperPoint weights (no keypoint_detector.* '
                               f'tensors): pass SuperPoint weights separately')
    if checkpoint.layout == 'hf':
        hf_config = checkpoint.hf_config
        if hf_config is not None and checkpoint.model == 'superglue':
            hf_config = hf_config.get('keypoint_detector_config') or {}
        architecture = superpoint_architecture(hf_config, checkpoint)
        tensors = superpoint_from_hf(tensors)
    try:
        model = SuperPoint(merge_architecture(config, architecture, checkpoint))
    except ValueError as e:
        raise WeightsError(f'cannot build SuperPoint for {checkpoint.describe()}: {e}') from None
    return fill(model, tensors, checkpoint)


# ---------------------------------------------------------------------------------------------
# Reading files

def check_preset_model(spec, what: str) -> None:
    """WeightsError when spec names a preset of the other model than what ('SuperPoint' | 'SuperGlue')."""
    model = PRESET_MODELS.get(spec) if isinstance(spec, str) else None
    if model not in (None, what):
        takes = ', '.join(repr(name) for name, m in PRESET_MODELS.items() if m == what)
        raise WeightsError(f"'{spec}' is a {model} preset, not {what} weights: the {what} weights take {takes}, a "
                           '.pth/.safetensors file, a Hugging Face directory or a hub id')


def resolve(spec: str | Path, what: str) -> Path:
    """Preset name, hub id or path -> existing local path; WeightsError naming what was tried and what to do
    (a preset of the other model, one not downloaded, a weights directory that is no directory, a missing path).
    A hub id is read from the Hugging Face cache only (python -m superglue_ros.download ID fetches it)."""
    check_preset_model(spec, what)
    if isinstance(spec, str) and spec in PRESETS:
        path = preset_path(spec)
        blocker = next(p for p in path.parents if os.path.exists(p))
        if not blocker.is_dir():
            raise WeightsError(f"{what} weights preset '{spec}': the weights directory {path.parent} cannot be used: "
                               f'{blocker} is a file, and SUPERGLUE_ROS_WEIGHTS_DIR (else '
                               '$XDG_CACHE_HOME/superglue_ros) must be a directory')
        if not path.exists():
            raise WeightsError(f"{what} weights preset '{spec}' is not downloaded: {path} does not exist. "
                               f'Download it with: {DOWNLOAD_COMMAND} {spec}')
        return path
    if not isinstance(spec, (str, Path)) or str(spec) == '':
        raise WeightsError(f'{what} weights must be {FORMATS_HINT}; got {spec!r}')
    if (hub_id := parse_hub_id(spec)) is not None:
        try:
            return hub_snapshot(*hub_id, local_only=True)
        except DownloadError as e:
            local = '' if hub_id[0] in OFFICIAL_HUB_IDS else f' {spec!r} is no local path, and as a Hugging Face'
            raise WeightsError(f'{what} weights:{local} {e}') from None
    path = Path(os.path.expanduser(spec))  # os.path: '~unknown_user' stays as it is
    if not path.exists():
        raise WeightsError(f'{what} weights not found: {path} does not exist. Give {FORMATS_HINT}; '
                           f'the official weights are fetched with: {DOWNLOAD_COMMAND}')
    return path


def read_checkpoint(spec: str | Path, what: str) -> Checkpoint:
    path = resolve(spec, what)
    hf_config = None
    if path.is_dir():
        files = path / 'model.safetensors'
        if not files.is_file():
            found = sorted(p.name for p in path.iterdir())
            raise WeightsError(f'{what} weights: directory {path} has no model.safetensors (found: {found}); '
                               f'give a Hugging Face checkpoint directory (config.json + model.safetensors) or a file')
        config_path = path / 'config.json'
        if config_path.exists():
            try:
                hf_config = json.loads(config_path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise WeightsError(f'{what} weights: cannot read {config_path} as JSON ({e})') from None
            if not isinstance(hf_config, dict):
                raise WeightsError(f'{what} weights: {config_path} is not a JSON object')
        tensors = read_safetensors(files, what)
        path = files
    elif path.suffix == '.safetensors':
        tensors = read_safetensors(path, what)
    else:
        tensors = read_torch(path, what)

    model, layout = classify(tensors, path, what)
    if hf_config is not None:
        model_type = hf_config.get('model_type')
        if model_type not in ('superpoint', 'superglue'):
            raise WeightsError(f'{what} weights: {path.parent / "config.json"} has model_type {model_type!r}, '
                               f"expected 'superpoint' or 'superglue'")
        if model_type != model:
            raise WeightsError(f'{what} weights: {path.parent / "config.json"} says model_type {model_type!r} but '
                               f'the tensors in {path} are {model} weights')
    return Checkpoint(path, tensors, hf_config, model, layout)


def read_safetensors(path: Path, what: str) -> dict:
    try:
        return load_file(str(path), device='cpu')
    except (SafetensorError, OSError) as e:
        raise WeightsError(f'{what} weights: cannot read {path} as safetensors ({e}); the file is corrupt, '
                           f'truncated or not a safetensors file: download or save it again') from None


def read_torch(path: Path, what: str) -> dict:
    preset = next((name for name in PRESETS if os.path.realpath(preset_path(name)) == os.path.realpath(path)), None)
    again = f'download it again ({DOWNLOAD_COMMAND} {preset})'  # fits a preset's file only, not one of the user's
    try:
        with warnings.catch_warnings():  # e.g. 'Detected pickle protocol 4': the error below says what is wrong
            warnings.simplefilter('ignore')
            tensors = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).split('WeightsUnpickler error:')[-1].strip().split('\n')[0] if 'Weights only' in str(e) else e
        advice = again if preset else f'Give {FORMATS_HINT}; the official weights are fetched with: {DOWNLOAD_COMMAND}'
        raise WeightsError(f'{what} weights: {path} is not a checkpoint of plain tensors ({reason}); it is corrupt '
                           f'or not a weights file, and pickled code is never executed. {advice}') from None
    except Exception as e:  # torch raises many types for damaged archives
        advice = (f'the file is corrupt or truncated: {again}' if preset
                  else 'the file is corrupt or not a PyTorch checkpoint: check the path or save it again')
        raise WeightsError(f'{what} weights: cannot read {path} as a PyTorch checkpoint ({type(e).__name__}: {e}); '
                           f'{advice}') from None
    tensors = unwrap(tensors)
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        content = sorted(map(str, tensors))[:10] if isinstance(tensors, dict) else type(tensors).__name__
        raise WeightsError(f'{what} weights: {path} is not a state dict (name -> tensor), nor one wrapped in '
                           f'{{{", ".join(repr(k) + ": ..." for k in WRAPPER_KEYS)}}}; found {content}. '
                           f'Give {FORMATS_HINT}')
    return tensors


def unwrap(content):
    """The state dict inside a training checkpoint ({'state_dict': sd, ...} or {'model': sd, ...}), with the
    'module.' prefix of (Distributed)DataParallel removed; anything else is returned as it is."""
    if isinstance(content, dict) and not all(isinstance(v, torch.Tensor) for v in content.values()):
        content = next((content[k] for k in WRAPPER_KEYS if isinstance(content.get(k), dict)), content)
    if isinstance(content, dict) and all(isinstance(v, torch.Tensor) for v in content.values()):
        content = dict(content)
        consume_prefix_in_state_dict_if_present(content, PARALLEL_PREFIX)
    return content


def classify(tensors: dict, path: Path, what: str) -> tuple[str, str]:
    """(model, layout) of a state dict from its names."""
    kinds = set()
    for name in tensors:
        if re.match(r'conv(\d[ab]|[PD][ab])\.', name):
            kinds.add(('superpoint', 'original'))
        elif re.match(r'(kenc|final_proj)\.|gnn\.layers\.\d+\.attn\.', name):
            kinds.add(('superglue', 'original'))
        elif re.match(r'(encoder\.conv_blocks|keypoint_decoder|descriptor_decoder)\.', name):
            kinds.add(('superpoint', 'hf'))
        elif re.match(r'(keypoint_encoder|final_projection|keypoint_detector)\.|gnn\.layers\.\d+\.attention\.', name):
            kinds.add(('superglue', 'hf'))
    if len(kinds) == 1:
        return kinds.pop()
    names = sorted(tensors)
    if not kinds:
        raise WeightsError(f'{what} weights: {path} holds no SuperPoint or SuperGlue tensors '
                           f'(names: {short_list(names)}). Give {FORMATS_HINT}')
    raise WeightsError(f'{what} weights: {path} mixes tensors of {sorted(kinds)} (names: {short_list(names)}); '
                       f'give one model in one format')


def short_list(names, limit: int = 12) -> str:
    names = list(names)
    return ', '.join(names[:limit]) + (f', ... ({len(names)} in all)' if len(names) > limit else '')


# ---------------------------------------------------------------------------------------------
# Architecture from a Hugging Face config.json

SUPERPOINT_FIXED = {'encoder_hidden_sizes': [64, 64, 128, 128], 'decoder_hidden_size': 256, 'keypoint_decoder_dim': 65}


def superpoint_architecture(hf_config: dict | None, checkpoint: Checkpoint) -> dict:
    if hf_config is None:
        return {}
    where = f'{checkpoint.path.parent / "config.json"}'
    for key, value in SUPERPOINT_FIXED.items():
        if key in hf_config and list_or_value(hf_config[key]) != value:
            raise WeightsError(f'{where}: SuperPoint {key} = {hf_config[key]!r} is not supported; only the original '
                               f'architecture ({key} = {value}) is')
    return {'descriptor_dim': hf_config['descriptor_decoder_dim']} if 'descriptor_decoder_dim' in hf_config else {}


def superglue_architecture(checkpoint: Checkpoint) -> dict:
    hf_config = checkpoint.hf_config
    if hf_config is None:
        return {}
    names = {'hidden_size': 'descriptor_dim', 'keypoint_encoder_sizes': 'keypoint_encoder',
             'gnn_layers_types': 'gnn_layers', 'num_attention_heads': 'num_heads'}
    architecture = {ours: list_or_value(hf_config[theirs]) for theirs, ours in names.items() if theirs in hf_config}
    if architecture.get('gnn_layers') is not None and not isinstance(architecture['gnn_layers'], list):
        architecture['gnn_layers'] = None  # fails validation below with the value shown
    try:
        check_superglue_config({**SuperGlue.default_config, **architecture})
    except (ValueError, TypeError) as e:
        raise WeightsError(f'{checkpoint.path.parent / "config.json"}: unusable SuperGlue architecture ({e})') from None
    return architecture


def list_or_value(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def merge_architecture(config: dict | None, architecture: dict, checkpoint: Checkpoint) -> dict:
    """config with the checkpoint's architecture; WeightsError where config asks for another one."""
    config = dict(config or {})
    conflicts = [f'{key}: config {config[key]!r}, checkpoint {value!r}'
                 for key, value in architecture.items() if key in config and list_or_value(config[key]) != value]
    if conflicts:
        raise WeightsError(f'{checkpoint.describe()} has another architecture than the config asks for '
                           f'({"; ".join(conflicts)}): drop these keys from the config or use other weights')
    return {**config, **architecture}


# ---------------------------------------------------------------------------------------------
# Hugging Face layout -> original layout

SUPERPOINT_HF_NAMES = {
    **{f'encoder.conv_blocks.{i}.conv_{ab}': f'conv{i + 1}{ab}' for i in range(4) for ab in 'ab'},
    'keypoint_decoder.conv_score_a': 'convPa', 'keypoint_decoder.conv_score_b': 'convPb',
    'descriptor_decoder.conv_descriptor_a': 'convDa', 'descriptor_decoder.conv_descriptor_b': 'convDb',
}


def superpoint_from_hf(tensors: dict) -> dict:
    """Same convolutions, other names; unknown names are kept (and reported as unexpected)."""
    converted = {}
    for name, tensor in tensors.items():
        module, _, param = name.rpartition('.')
        converted[f'{SUPERPOINT_HF_NAMES[module]}.{param}' if module in SUPERPOINT_HF_NAMES else name] = tensor
    return converted


def superglue_from_hf(tensors: dict, num_heads: int, encoder_layers: int) -> dict:
    """Hugging Face SuperGlue (Linear layers, heads-major attention channels) -> original layout.

    encoder_layers: number of hidden keypoint-encoder layers (Linear + BatchNorm each)."""
    def heads_to_original(t):  # channel h * head_dim + d -> d * num_heads + h, along dim 0
        if t.shape[0] % num_heads:
            return t  # a wrong shape, reported by fill()
        return t.reshape(num_heads, t.shape[0] // num_heads, *t.shape[1:]).transpose(0, 1).reshape(t.shape)

    converted = {}
    for name, t in tensors.items():
        new = name
        if m := re.fullmatch(r'keypoint_encoder\.encoder\.(\d+)\.(linear\.|batch_norm\.)?(\w+)', name):
            i, part, param = int(m[1]), m[2], m[3]
            index = 3 * i + (1 if part == 'batch_norm.' else 0)  # Sequential: conv, bn, relu, conv, ...
            if (part is None) == (i == encoder_layers):  # only the last layer is a bare Linear
                new = f'kenc.encoder.{index}.{param}'
        elif m := re.fullmatch(r'gnn\.layers\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)', name):
            proj = {'query': 0, 'key': 1, 'value': 2}[m[2]]
            new, t = f'gnn.layers.{m[1]}.attn.proj.{proj}.{m[3]}', heads_to_original(t)
        elif m := re.fullmatch(r'gnn\.layers\.(\d+)\.attention\.output\.dense\.(weight|bias)', name):
            new = f'gnn.layers.{m[1]}.attn.merge.{m[2]}'
            if m[2] == 'weight':  # input channels are the heads' outputs
                t = heads_to_original(t.T).T
        elif m := re.fullmatch(r'gnn\.layers\.(\d+)\.mlp\.(0\.linear|0\.batch_norm|1)\.(\w+)', name):
            index = {'0.linear': 0, '0.batch_norm': 1, '1': 3}[m[2]]
            new = f'gnn.layers.{m[1]}.mlp.{index}.{m[3]}'
        elif m := re.fullmatch(r'final_projection\.final_proj\.(weight|bias)', name):
            new = f'final_proj.{m[1]}'
        if new != name and t.dim() == 2:
            t = t.unsqueeze(-1)  # Linear [out, in] -> Conv1d [out, in, 1]
        converted[new] = t.contiguous()
    return converted


# ---------------------------------------------------------------------------------------------

def fill(model, tensors: dict, checkpoint: Checkpoint):
    """Load tensors into model (eval mode) or raise WeightsError listing what does not fit."""
    expected = model.state_dict()
    mismatched = [f'{k}: checkpoint {tuple(v.shape)}, model {tuple(expected[k].shape)}'
                  for k, v in tensors.items() if k in expected and v.shape != expected[k].shape]
    if mismatched:
        raise WeightsError(f'{checkpoint.describe()} does not fit the {type(model).__name__} architecture '
                           f'{architecture_of(model)}: tensor shapes differ: {short_list(mismatched)}')
    not_finite = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if not_finite:
        raise WeightsError(f'{checkpoint.describe()} holds NaN or infinite values in {short_list(not_finite)}: the '
                           f'file is corrupt, or from a training run that diverged; use other weights')
    result = model.load_state_dict(tensors, strict=False)  # BatchNorm tolerates a missing num_batches_tracked
    problems = []
    if result.missing_keys:
        problems.append(f'missing keys: {short_list(result.missing_keys)}')
    if result.unexpected_keys:
        problems.append(f'unexpected keys: {short_list(result.unexpected_keys)}')
    if problems:
        raise WeightsError(f'{checkpoint.describe()} does not match the {type(model).__name__} architecture '
                           f'{architecture_of(model)}: {"; ".join(problems)}. The file is incomplete or for another '
                           f'model or configuration')
    return model.eval()


def architecture_of(model) -> dict:
    keys = ('descriptor_dim',) if isinstance(model, SuperPoint) else (
        'descriptor_dim', 'keypoint_encoder', 'gnn_layers', 'num_heads')
    config = {k: model.config[k] for k in keys}
    if 'gnn_layers' in config:
        config['gnn_layers'] = f'{len(config["gnn_layers"])} layers'
    return config
