"""Test helpers that write SuperPoint / SuperGlue checkpoints in both published formats.

Original format: the state dict saved with torch.save, as the released superpoint_v1.pth and
superglue_*.pth (legacy, non-zip serialisation by default, like those files).
Hugging Face format: the transformers models themselves, filled with the same weights and written
with save_pretrained (config.json + model.safetensors), as published on the Hub.

The conversion to the Hugging Face layout is written here independently of superglue_ros.weights
(which converts the other way), following the published conversion: Conv1d -> Linear, renamed
modules, attention channels reordered from d * heads + h to h * head_dim + d.
"""
from functools import lru_cache
from pathlib import Path

import cv2
import torch

from superglue_ros.random_weights import superglue_state_dict, superpoint_state_dict

SUPERPOINT_TO_HF = {
    'conv1a': 'encoder.conv_blocks.0.conv_a', 'conv1b': 'encoder.conv_blocks.0.conv_b',
    'conv2a': 'encoder.conv_blocks.1.conv_a', 'conv2b': 'encoder.conv_blocks.1.conv_b',
    'conv3a': 'encoder.conv_blocks.2.conv_a', 'conv3b': 'encoder.conv_blocks.2.conv_b',
    'conv4a': 'encoder.conv_blocks.3.conv_a', 'conv4b': 'encoder.conv_blocks.3.conv_b',
    'convPa': 'keypoint_decoder.conv_score_a', 'convPb': 'keypoint_decoder.conv_score_b',
    'convDa': 'descriptor_decoder.conv_descriptor_a', 'convDb': 'descriptor_decoder.conv_descriptor_b',
}


@lru_cache(maxsize=None)
def confident_weights(seed: int = 0) -> tuple[dict, dict]:
    """(SuperPoint, SuperGlue) confident random state dicts in the original layout, built once per
    process. Do not modify them."""
    return superpoint_state_dict(seed), superglue_state_dict(seed)


def load_grey(path) -> torch.Tensor:
    """A frame as SuperPoint input [1, 1, H, W] in [0, 1] (grey as OpenCV converts it)."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert image is not None, f'cannot read {path}'
    return torch.from_numpy(image).float()[None, None] / 255


def superglue_input(features0: dict, features1: dict, image_size=(640, 480), index: int = 0) -> dict:
    """SuperGlue.forward input from two SuperPoint outputs (image `index` of each batch)."""
    data = {}
    for i, features in enumerate((features0, features1)):
        data[f'keypoints{i}'] = features['keypoints'][index][None]
        data[f'scores{i}'] = features['scores'][index][None]
        data[f'descriptors{i}'] = features['descriptors'][index][None]
        data[f'image_size{i}'] = image_size
    return data


def write_original(path: Path, state_dict: dict, legacy: bool = True) -> Path:
    """An original-format .pth file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state_dict), path, _use_new_zipfile_serialization=not legacy)
    return path


def superpoint_to_hf(state_dict: dict) -> dict:
    out = {}
    for name, tensor in state_dict.items():
        module, param = name.split('.')
        out[f'{SUPERPOINT_TO_HF[module]}.{param}'] = tensor.clone()
    return out


def superglue_to_hf(state_dict: dict, num_heads: int = 4, encoder_layers: int = 4) -> dict:
    """Original SuperGlue state dict -> SuperGlueForKeypointMatching names and layout (without the
    keypoint_detector.* part)."""
    def heads_major(t):  # rows d * heads + h -> h * head_dim + d
        return t.reshape(t.shape[0] // num_heads, num_heads, *t.shape[1:]).transpose(0, 1).reshape(t.shape)

    out = {}
    for name, t in state_dict.items():
        parts = name.split('.')
        t = t.clone()
        if t.dim() == 3:  # Conv1d kernel 1 -> Linear
            t = t[..., 0]
        if parts[0] == 'kenc':
            index, param = int(parts[2]), parts[3]
            layer, kind = divmod(index, 3)  # conv, bn, relu, conv, bn, relu, ..., conv
            if layer == encoder_layers:
                out[f'keypoint_encoder.encoder.{layer}.{param}'] = t
            else:
                out[f'keypoint_encoder.encoder.{layer}.{["linear", "batch_norm"][kind]}.{param}'] = t
        elif parts[0] == 'gnn':
            prefix = f'gnn.layers.{parts[2]}'
            if parts[3:5] == ['attn', 'proj']:
                which = ['query', 'key', 'value'][int(parts[5])]
                out[f'{prefix}.attention.self.{which}.{parts[6]}'] = heads_major(t)
            elif parts[3:5] == ['attn', 'merge']:
                out[f'{prefix}.attention.output.dense.{parts[5]}'] = heads_major(t.T).T if parts[5] == 'weight' else t
            else:  # mlp.0 conv, mlp.1 bn, mlp.3 conv
                new = {'0': '0.linear', '1': '0.batch_norm', '3': '1'}[parts[4]]
                out[f'{prefix}.mlp.{new}.{parts[5]}'] = t
        elif parts[0] == 'final_proj':
            out[f'final_projection.final_proj.{parts[1]}'] = t
        else:  # bin_score
            out[name] = t
    return {k: v.contiguous() for k, v in out.items()}


def hf_superpoint(superpoint_state: dict, **config):
    """transformers' SuperPointForKeypointDetection with the given (original-layout) weights, eval mode."""
    from transformers import SuperPointConfig, SuperPointForKeypointDetection

    model = SuperPointForKeypointDetection(SuperPointConfig(**config))
    model.load_state_dict(superpoint_to_hf(superpoint_state), strict=True)
    return model.eval()


def hf_superglue(superglue_state: dict, superpoint_state: dict, keypoint_detector_config: dict | None = None,
                 **config):
    """transformers' SuperGlueForKeypointMatching with the given (original-layout) weights, eval mode.

    Mind its defaults: matching_threshold 0.0 (the original: 0.2)."""
    from transformers import SuperGlueConfig, SuperGlueForKeypointMatching

    model = SuperGlueForKeypointMatching(SuperGlueConfig(keypoint_detector_config=keypoint_detector_config, **config))
    state = superglue_to_hf(superglue_state, num_heads=model.config.num_attention_heads,
                            encoder_layers=len(model.config.keypoint_encoder_sizes))
    state.update({f'keypoint_detector.{k}': v for k, v in superpoint_to_hf(superpoint_state).items()})
    model.load_state_dict(state, strict=True)
    return model.eval()


def write_hf_superpoint(directory: Path, superpoint_state: dict) -> Path:
    """A Hugging Face SuperPoint checkpoint directory (config.json + model.safetensors)."""
    hf_superpoint(superpoint_state).save_pretrained(directory)
    return Path(directory)


def write_hf_superglue(directory: Path, superglue_state: dict, superpoint_state: dict) -> Path:
    """A Hugging Face SuperGlue checkpoint directory, with its SuperPoint in keypoint_detector.*."""
    hf_superglue(superglue_state, superpoint_state).save_pretrained(directory)
    return Path(directory)
