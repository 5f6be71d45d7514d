"""Deterministic "confident" random weights for SuperPoint + SuperGlue (tests, demo --random-weights).

Plain random initialisation makes a useless pair: SuperPoint's descriptors are nearly parallel and
SuperGlue's assignment is flat (matching scores ~1/N, no match above 0.2). These weights are random
but shaped so that the pipeline behaves like a trained one on real images:

SuperPoint
  - encoder: He-initialised convolutions; the first layer's filters have zero mean, so the features
    respond to image structure, not to brightness (a black image has no features, hence no keypoints);
  - descriptor head: random rotation of the features, centred and partly whitened on the statistics
    of a synthetic natural image (dead-leaves model), so descriptors of different places differ;
  - detection head: the "no keypoint" logit falls with the local feature energy, the 64 pixel logits
    are random projections: textured regions give keypoints, flat ones none.
SuperGlue
  - keypoint encoder and GNN residual branches damped (small last layers): the descriptors pass
    through almost unchanged, with a little position information;
  - final projection: a scaled near-identity, so matching scores are sharp scaled cosine similarities;
  - dustbin score between the similarity of matching and of unrelated descriptors.
The state dicts have the original layout (load with model.load_state_dict or save as .pth).

To try the CLI or the node without the official weights (offline), write them as .pth files:

    python -m superglue_ros.random_weights DIR   # DIR/superpoint_random.pth, DIR/superglue_random.pth

Everything then runs, but the matches are MEANINGLESS: these weights were never trained.
"""
import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from .models import SuperGlue, SuperPoint

# SuperPoint
DETECTION_BIAS = 10.0      # "no keypoint" logit where there is no structure: blank image -> no keypoint
DETECTION_GAIN = 6.0       # ... minus this times the feature energy (1 = median of the synthetic image)
PIXEL_LOGIT_STD = 2.0      # spread of the 64 pixel logits of a cell on the synthetic image
WHITENING = 0.25           # descriptor head: covariance ** -WHITENING (0: centred only, 0.5: fully white)
# SuperGlue
KENC_DAMPING = 0.05        # scale of the keypoint encoder's last layer (position information)
GNN_DAMPING = 0.01         # scale of the last layer of each GNN residual branch
PROJECTION_SCALE = 20.0    # final projection = PROJECTION_SCALE * (I + noise)
BIN_SCORE = 6.0            # dustbin score


def superpoint_state_dict(seed: int = 0, descriptor_dim: int = 256) -> dict:
    """SuperPoint weights in the original layout; same seed -> same tensors."""
    gen = torch.Generator().manual_seed(seed)
    model = SuperPoint({'descriptor_dim': descriptor_dim})
    state = {}

    def he(shape):
        return torch.randn(shape, generator=gen) * math.sqrt(2.0 / math.prod(shape[1:]))

    for name in ('conv1a', 'conv1b', 'conv2a', 'conv2b', 'conv3a', 'conv3b', 'conv4a', 'conv4b', 'convPa', 'convDa'):
        conv = getattr(model, name)
        weight = he(conv.weight.shape)
        if name == 'conv1a':  # zero-mean filters: blind to brightness, black image -> zero features
            weight = weight - weight.mean(dim=(1, 2, 3), keepdim=True)
            weight = weight * 8  # image values are in [0, 1]: bring the features to unit scale
        state[f'{name}.weight'], state[f'{name}.bias'] = weight, torch.zeros(conv.out_channels)

    model.load_state_dict({**model.state_dict(), **state})
    with torch.no_grad():
        features = model.encode(dead_leaves(gen)[None, None])      # [1, 128, h, w]
        detector = F.relu(model.convPa(features))[0].flatten(1)     # [256, h * w]
        describer = F.relu(model.convDa(features))[0].flatten(1)    # [256, h * w]

    # Detection: "no keypoint" logit = BIAS - GAIN * normalised energy; pixel logits random.
    energy = detector.sum(0)
    scale = energy.median()
    pixel_logits = torch.randn(64, detector.shape[0], generator=gen)
    pixel_logits = pixel_logits / (pixel_logits @ detector).std() * PIXEL_LOGIT_STD
    no_keypoint = -DETECTION_GAIN / scale * torch.ones(1, detector.shape[0])
    state['convPb.weight'] = torch.cat([pixel_logits, no_keypoint])[..., None, None]
    state['convPb.bias'] = torch.cat([torch.zeros(64), torch.tensor([DETECTION_BIAS])])

    # Descriptors: whitened random projection of the centred features.
    mean = describer.mean(1, keepdim=True)
    cov = torch.cov(describer - mean) + 1e-4 * torch.eye(describer.shape[0])
    eigval, eigvec = torch.linalg.eigh(cov)
    whiten = eigvec @ torch.diag(eigval.clamp_min(1e-8) ** -WHITENING) @ eigvec.T
    size = max(descriptor_dim, describer.shape[0])
    projection = torch.linalg.qr(torch.randn(size, size, generator=gen))[0][:descriptor_dim, :describer.shape[0]]
    weight = projection @ whiten
    state['convDb.weight'] = weight[..., None, None]
    state['convDb.bias'] = -(weight @ mean)[:, 0]
    return state


def superglue_state_dict(seed: int = 0, config: dict | None = None) -> dict:
    """SuperGlue weights in the original layout; same seed -> same tensors."""
    gen = torch.Generator().manual_seed(seed)
    model = SuperGlue(config)
    dim = model.config['descriptor_dim']
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith('running_mean') or name.endswith('.bias'):
            state[name] = torch.zeros_like(tensor)
        elif name.endswith('running_var') or (name.endswith('.weight') and tensor.dim() == 1):
            state[name] = torch.ones_like(tensor)  # BatchNorm: identity
        elif name.endswith('.weight'):
            fan_in = tensor.shape[1]
            state[name] = torch.randn(tensor.shape, generator=gen) * math.sqrt(2.0 / fan_in)
        else:
            state[name] = tensor.clone()
    # damp the last layer of every residual branch (keypoint encoder, GNN layers)
    last_kenc = len(model.kenc.encoder) - 1
    state[f'kenc.encoder.{last_kenc}.weight'] *= KENC_DAMPING
    for i in range(len(model.gnn.layers)):
        state[f'gnn.layers.{i}.mlp.3.weight'] *= GNN_DAMPING
    identity = torch.eye(dim) + 0.01 * torch.randn(dim, dim, generator=gen)
    state['final_proj.weight'] = PROJECTION_SCALE * identity[..., None]
    state['bin_score'] = torch.tensor(BIN_SCORE)
    return state


def random_superpoint(seed: int = 0, config: dict | None = None) -> SuperPoint:
    """SuperPoint (eval mode) with confident random weights."""
    model = SuperPoint(config)
    model.load_state_dict(superpoint_state_dict(seed, model.config['descriptor_dim']))
    return model.eval()


def random_superglue(seed: int = 0, config: dict | None = None) -> SuperGlue:
    """SuperGlue (eval mode) with confident random weights."""
    model = SuperGlue(config)
    model.load_state_dict(superglue_state_dict(seed, config))
    return model.eval()


def dead_leaves(gen: torch.Generator, size: int = 256, leaves: int = 400) -> torch.Tensor:
    """Synthetic image with natural-image statistics: occluding discs of power-law sizes. [size, size] in [0, 1]."""
    image = torch.full((size, size), 0.5)
    for radius_exponent, cx, cy, value in torch.rand(leaves, 4, generator=gen).tolist():
        radius = 2 * (size / 8) ** radius_exponent  # log-uniform between 2 and size / 4
        x0, x1 = max(int(cx * size - radius), 0), min(int(cx * size + radius) + 1, size)
        y0, y1 = max(int(cy * size - radius), 0), min(int(cy * size + radius) + 1, size)
        ys, xs = torch.meshgrid(torch.arange(y0, y1), torch.arange(x0, x1), indexing='ij')
        disc = (xs - cx * size) ** 2 + (ys - cy * size) ** 2 < radius ** 2
        image[y0:y1, x0:x1][disc] = value
    return image


def write_files(directory: Path, seed: int = 0) -> tuple[Path, Path]:
    """superpoint_random.pth and superglue_random.pth (original layout) in directory; their paths.
    OSError when the directory cannot be created, RuntimeError (torch.save's) when a file cannot be written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    superpoint, superglue = directory / 'superpoint_random.pth', directory / 'superglue_random.pth'
    torch.save(superpoint_state_dict(seed), superpoint)
    torch.save(superglue_state_dict(seed), superglue)
    return superpoint, superglue


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m superglue_ros.random_weights',
                                     description='Write confident random SuperPoint + SuperGlue weights (original '
                                                 '.pth layout) to try the CLI or the node offline. Their matches '
                                                 'are MEANINGLESS.')
    parser.add_argument('directory', type=Path, help='where to write superpoint_random.pth and superglue_random.pth')
    parser.add_argument('--seed', type=int, default=0, help='same seed, same weights (default 0)')
    args = parser.parse_args(argv)
    try:
        superpoint, superglue = write_files(args.directory, args.seed)
    except (OSError, RuntimeError) as e:  # torch.save reports a file it cannot open as a RuntimeError
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).split('strerror: ')[-1]
        print(f'{parser.prog}: error: cannot write to {args.directory}: {reason}', file=sys.stderr)
        return 2
    print(f'wrote {superpoint} and {superglue}: random weights, the matches are MEANINGLESS. Use them with\n'
          f'  python -m superglue_ros.match A.png B.png --superpoint-weights {superpoint} '
          f'--superglue-weights {superglue}\n'
          f'  python -m superglue_ros.node --ros-args -p superpoint_weights:={superpoint} '
          f'-p superglue_weights:={superglue}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
