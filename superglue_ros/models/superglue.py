"""SuperGlue feature matcher, with the behaviour of the original release.

Sarlin, DeTone, Malisiewicz, Rabinovich: "SuperGlue: Learning Feature Matching with Graph Neural
Networks", CVPR 2020. Module names follow magicleap/SuperGluePretrainedNetwork, so its
superglue_{indoor,outdoor}.pth load directly (superglue_ros.weights also reads the Hugging Face
layout).

Matching is split in two: encode() depends on one image only (keypoint encoding and, when the GNN
starts with a 'self' layer, that layer too), so a keyframe is encoded once and its encoding reused;
match() runs the remaining layers, the optimal transport and the mutual check on two encodings.
"""
from numbers import Integral, Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Attention implementations, same result up to rounding: 'einsum' as the original release,
# 'sdpa' torch's scaled_dot_product_attention (fused kernels on GPUs). The default stays 'einsum'
# until 'sdpa' is measured faster on a GPU (docs/BENCHMARKS.md).
ATTENTION = ('einsum', 'sdpa')


def mlp(channels: list[int]) -> nn.Sequential:
    """Point-wise MLP on [B, C, N]: Conv1d (kernel 1), BatchNorm and ReLU between the layers."""
    layers = []
    for i in range(1, len(channels)):
        layers.append(nn.Conv1d(channels[i - 1], channels[i], kernel_size=1, bias=True))
        if i < len(channels) - 1:
            layers += [nn.BatchNorm1d(channels[i]), nn.ReLU()]
    return nn.Sequential(*layers)


def normalize_keypoints(keypoints: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Pixels [B, N, 2] -> centred on the image and scaled by 0.7 of its larger side."""
    # made on the device: new_tensor() would copy from the host and stall it until the stream is idle
    size = torch.stack([keypoints.new_full((), v) for v in image_size])  # (width, height)
    return (keypoints - size / 2) / (size.max() * 0.7)


class KeypointEncoder(nn.Module):
    """MLP that lifts (x, y, score) of each keypoint to the descriptor dimension."""

    def __init__(self, feature_dim: int, layers: list[int]):
        super().__init__()
        self.encoder = mlp([3] + list(layers) + [feature_dim])

    def forward(self, keypoints: Tensor, scores: Tensor) -> Tensor:
        # [B, N, 2] normalised keypoints, [B, N] scores -> [B, D, N]
        return self.encoder(torch.cat([keypoints.transpose(1, 2), scores.unsqueeze(1)], dim=1))


class MultiHeadedAttention(nn.Module):
    """Multi-head attention on [B, D, N] point sets. As in the original release, head h owns the
    channels d * num_heads + h (a view [B, D // num_heads, num_heads, N])."""

    def __init__(self, num_heads: int, d_model: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.implementation = 'einsum'  # one of ATTENTION, see SuperGlue.set_attention
        self.merge = nn.Conv1d(d_model, d_model, kernel_size=1)
        self.proj = nn.ModuleList([nn.Conv1d(d_model, d_model, kernel_size=1) for _ in range(3)])

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        # query [B, D, N], key and value [B, D, M] -> [B, D, N]
        b, d, h = query.shape[0], self.head_dim, self.num_heads
        q, k, v = (proj(x).view(b, d, h, -1) for proj, x in zip(self.proj, (query, key, value)))
        if self.implementation == 'sdpa':  # same heads as [B, H, N, d] views; default scale d ** -0.5
            message = F.scaled_dot_product_attention(*(x.permute(0, 2, 3, 1) for x in (q, k, v)))
            message = message.permute(0, 3, 1, 2)  # [B, d, H, N]
        else:
            logits = torch.einsum('bdhn,bdhm->bhnm', q * d ** -0.5, k)
            message = torch.einsum('bhnm,bdhm->bdhn', logits.softmax(dim=-1), v)
        return self.merge(message.reshape(b, d * h, -1))


class AttentionalPropagation(nn.Module):
    """One GNN layer: attend from x to source, then an MLP on [x, message] gives the update of x."""

    def __init__(self, feature_dim: int, num_heads: int):
        super().__init__()
        self.attn = MultiHeadedAttention(num_heads, feature_dim)
        self.mlp = mlp([feature_dim * 2, feature_dim * 2, feature_dim])

    def forward(self, x: Tensor, source: Tensor) -> Tensor:
        return self.mlp(torch.cat([x, self.attn(x, source, source)], dim=1))


class AttentionalGNN(nn.Module):
    def __init__(self, feature_dim: int, layer_names: list[str], num_heads: int):
        super().__init__()
        self.names = list(layer_names)
        self.layers = nn.ModuleList([AttentionalPropagation(feature_dim, num_heads) for _ in self.names])

    def forward(self, desc0: Tensor, desc1: Tensor, first: int = 0) -> tuple[Tensor, Tensor]:
        """Layers first, first + 1, ...: 'self' attends within an image, 'cross' to the other one.
        Both images are updated from the same (previous) state."""
        for layer, name in zip(self.layers[first:], self.names[first:]):
            src0, src1 = (desc1, desc0) if name == 'cross' else (desc0, desc1)
            desc0, desc1 = desc0 + layer(desc0, src0), desc1 + layer(desc1, src1)
        return desc0, desc1


def log_sinkhorn_iterations(couplings: Tensor, log_mu: Tensor, log_nu: Tensor, iters: int) -> Tensor:
    """Sinkhorn normalisation in log space: rows sum to exp(log_mu), columns to exp(log_nu)."""
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(couplings + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(couplings + u.unsqueeze(2), dim=1)
    return couplings + u.unsqueeze(2) + v.unsqueeze(1)


def log_optimal_transport(scores: Tensor, alpha: Tensor, iters: int) -> Tensor:
    """Optimal transport with a dustbin row and column of score alpha.

    scores [B, M, N] -> log assignment [B, M + 1, N + 1], scaled so that a certain match is 1."""
    b, m, n = scores.shape
    ms, ns = scores.new_full((), m), scores.new_full((), n)  # on the device: no host stall (see normalize_keypoints)
    alpha = alpha.to(scores)
    couplings = torch.cat([torch.cat([scores, alpha.expand(b, m, 1)], -1),
                           torch.cat([alpha.expand(b, 1, n), alpha.expand(b, 1, 1)], -1)], 1)
    norm = -(ms + ns).log()
    log_mu = torch.cat([norm.expand(m), ns.log()[None] + norm])  # each point 1, the dustbin the other side's count
    log_nu = torch.cat([norm.expand(n), ms.log()[None] + norm])
    z = log_sinkhorn_iterations(couplings, log_mu[None].expand(b, -1), log_nu[None].expand(b, -1), iters)
    return z - norm  # probabilities times M + N


class SuperGlue(nn.Module):
    """SuperGlue: keypoint encoder, attentional GNN, final projection, Sinkhorn with a dustbin.

    Config:
      descriptor_dim       size of the descriptors and of the GNN state
      keypoint_encoder     hidden sizes of the keypoint encoder MLP
      gnn_layers           'self' / 'cross' for each GNN layer
      num_heads            attention heads
      sinkhorn_iterations  optimal transport iterations (read at every match)
      match_threshold      minimum matching score of a match (read at every match)
    """
    default_config = {
        'descriptor_dim': 256,
        'keypoint_encoder': [32, 64, 128, 256],
        'gnn_layers': ['self', 'cross'] * 9,
        'num_heads': 4,
        'sinkhorn_iterations': 100,
        'match_threshold': 0.2,
    }

    def __init__(self, config: dict | None = None):
        super().__init__()
        config = dict(config or {})
        unknown = sorted(set(config) - set(self.default_config))
        if unknown:
            raise ValueError(f'unknown SuperGlue config key(s) {unknown}; valid keys: {sorted(self.default_config)}')
        self.config = {**self.default_config, **config}
        check_superglue_config(self.config)

        dim = self.config['descriptor_dim']
        self.kenc = KeypointEncoder(dim, self.config['keypoint_encoder'])
        self.gnn = AttentionalGNN(dim, self.config['gnn_layers'], self.config['num_heads'])
        self.final_proj = nn.Conv1d(dim, dim, kernel_size=1, bias=True)
        self.bin_score = nn.Parameter(torch.tensor(1.))
        # the first layer goes into encode() when it only looks at its own image
        self.encoded_layers = 1 if self.gnn.names and self.gnn.names[0] == 'self' else 0

    def set_attention(self, implementation: str):
        """Attention implementation of every GNN layer: one of ATTENTION ('einsum' by default)."""
        if implementation not in ATTENTION:
            raise ValueError(f'attention must be one of {ATTENTION}, got {implementation!r}')
        for layer in self.gnn.layers:
            layer.attn.implementation = implementation

    def encode(self, keypoints: Tensor, scores: Tensor, descriptors: Tensor, image_size: tuple[int, int]) -> Tensor:
        """keypoints [B, N, 2] pixels, scores [B, N], descriptors [B, D, N], image_size (width, height)
        -> [B, D, N]: descriptors plus keypoint encoding, then the first GNN layer if it is 'self'."""
        b, n = scores.shape
        if keypoints.shape != (b, n, 2) or descriptors.shape != (b, self.config['descriptor_dim'], n):
            raise ValueError(f'SuperGlue.encode expects keypoints [B, N, 2], scores [B, N], descriptors '
                             f'[B, {self.config["descriptor_dim"]}, N]; got {tuple(keypoints.shape)}, '
                             f'{tuple(scores.shape)}, {tuple(descriptors.shape)}')
        if n == 0:
            return descriptors
        keypoints = normalize_keypoints(keypoints.float(), image_size).to(descriptors.dtype)
        desc = descriptors + self.kenc(keypoints, scores.to(descriptors.dtype))
        if self.encoded_layers:
            desc = desc + self.gnn.layers[0](desc, desc)
        return desc

    def match(self, encoded0: Tensor, encoded1: Tensor) -> dict:
        """Two encode() outputs [B, D, N], [B, D, M] -> 'matches0' [B, N] (index in image 1, -1 = none),
        'matches1' [B, M], 'matching_scores0' [B, N], 'matching_scores1' [B, M] (float32)."""
        b, _, n = encoded0.shape
        m = encoded1.shape[2]
        if n == 0 or m == 0:
            return {'matches0': encoded0.new_full((b, n), -1, dtype=torch.long),
                    'matches1': encoded1.new_full((b, m), -1, dtype=torch.long),
                    'matching_scores0': encoded0.new_zeros((b, n), dtype=torch.float),
                    'matching_scores1': encoded1.new_zeros((b, m), dtype=torch.float)}
        config = self.config
        check_superglue_config(config)

        desc0, desc1 = self.gnn(encoded0, encoded1, first=self.encoded_layers)
        mdesc0, mdesc1 = self.final_proj(desc0), self.final_proj(desc1)
        scores = torch.einsum('bdn,bdm->bnm', mdesc0, mdesc1) / config['descriptor_dim'] ** 0.5
        # optimal transport in float32 also for a half-precision model or under autocast: 100
        # log-sum-exps need the precision
        with torch.autocast(scores.device.type, enabled=False):
            scores = log_optimal_transport(scores.float(), self.bin_score, config['sinkhorn_iterations'])

        # mutual nearest neighbours in the assignment, above the threshold
        max0, max1 = scores[:, :-1, :-1].max(2), scores[:, :-1, :-1].max(1)
        indices0, indices1 = max0.indices, max1.indices
        mutual0 = torch.arange(n, device=scores.device)[None] == indices1.gather(1, indices0)
        mutual1 = torch.arange(m, device=scores.device)[None] == indices0.gather(1, indices1)
        zero = scores.new_zeros(())
        mscores0 = torch.where(mutual0, max0.values.exp(), zero)
        mscores1 = torch.where(mutual1, mscores0.gather(1, indices1), zero)
        valid0 = mutual0 & (mscores0 > config['match_threshold'])
        valid1 = mutual1 & valid0.gather(1, indices1)
        return {'matches0': torch.where(valid0, indices0, -1),
                'matches1': torch.where(valid1, indices1, -1),
                'matching_scores0': mscores0,
                'matching_scores1': mscores1}

    def forward(self, data: dict) -> dict:
        """data: keypoints0/1 [B, N, 2], scores0/1 [B, N], descriptors0/1 [B, D, N], image_size0/1
        (width, height). Same as match(encode(image 0), encode(image 1))."""
        encoded = [self.encode(data[f'keypoints{i}'], data[f'scores{i}'], data[f'descriptors{i}'],
                               data[f'image_size{i}']) for i in (0, 1)]
        return self.match(*encoded)


def check_superglue_config(config: dict):
    """ValueError naming the bad SuperGlue setting and what is allowed."""
    def is_int(x):
        return isinstance(x, Integral) and not isinstance(x, bool)

    if not is_int(config['sinkhorn_iterations']) or config['sinkhorn_iterations'] < 0:
        raise ValueError(f'sinkhorn_iterations must be an integer >= 0, got {config["sinkhorn_iterations"]!r}')
    threshold = config['match_threshold']
    if not isinstance(threshold, Real) or isinstance(threshold, bool) or not 0 <= threshold < 1:
        raise ValueError(f'match_threshold must be a number in [0, 1), got {threshold!r}')
    dim, heads = config['descriptor_dim'], config['num_heads']
    if not is_int(dim) or not is_int(heads) or dim < 1 or heads < 1 or dim % heads:
        raise ValueError(f'descriptor_dim ({dim!r}) must be a positive multiple of num_heads ({heads!r})')
    if not all(is_int(c) and c > 0 for c in config['keypoint_encoder']):
        raise ValueError(f'keypoint_encoder must be a list of positive layer sizes, got {config["keypoint_encoder"]!r}')
    if isinstance(config['gnn_layers'], str) or not all(name in ('self', 'cross') for name in config['gnn_layers']):
        raise ValueError(f"gnn_layers must be a list of 'self' / 'cross', got {config['gnn_layers']!r}")
