"""SuperGlue feature matcher, with the behaviour of the original release.

Sarlin, DeTone, Malisiewicz, Rabinovich: "SuperGlue: Learning Feature Matching with Graph Neural
Networks", CVPR 2020. Module names follow magicleap/SuperGluePretrainedNetwork, so its
superglue_{indoor,outdoor}.pth load directly (superglue_ros.weights also reads the Hugging Face
layout).

Matching is split in two: encode() depends on one image only (keypoint encoding and, when the GNN
starts with a 'self' layer, that layer too), so a keyframe is encoded once and its encoding reused;
match() runs the remaining layers, the optimal transport and the mutual check on two encodings.

Computed for speed (docs/BENCHMARKS.md), with the original's results up to float rounding
(test/test_fidelity.py): the GNN on points as rows ([B, N, D] in memory, the kernel-1 convolutions
as matrix products), attention with torch's scaled_dot_product_attention, and the Sinkhorn iterations
on the CPU as matrix-vector products in the exp domain (sinkhorn). Inference only: BatchNorm
applies its running statistics. set_precision('bf16' / 'fp16') runs the GNN layers in half precision.
"""
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..precision import HalfWeights, check_precision, full_precision
from ..settings import check_all, defaults, names

# exp-domain Sinkhorn: a scaling beyond [1 / SCALING_LIMIT, SCALING_LIMIT] is absorbed into the potentials.
# Kernel entries are <= 1 and a scaling <= 1e100, so a row sum is >= its marginal / 1e100 (a normal
# float64) and an entry lost below the smallest normal float64 (2.2e-308) weighs < 1e-100 of it.
SCALING_LIMIT = 1e100


def mlp(channels: list[int]) -> nn.Sequential:
    """Point-wise MLP on [B, C, N]: Conv1d (kernel 1), BatchNorm and ReLU between the layers."""
    layers = []
    for i in range(1, len(channels)):
        layers.append(nn.Conv1d(channels[i - 1], channels[i], kernel_size=1, bias=True))
        if i < len(channels) - 1:
            layers += [nn.BatchNorm1d(channels[i]), nn.ReLU()]
    return nn.Sequential(*layers)


def linear(rows: Tensor, conv: nn.Conv1d, half: HalfWeights | None = None) -> Tensor:
    """The kernel-1 Conv1d `conv` as a matrix product on points as rows: [B, N, C_in] -> [B, N, C_out],
    with half's copy of the weights when given."""
    weight, bias = (conv.weight, conv.bias) if half is None else half(conv)
    return F.linear(rows, weight[..., 0], bias)


def run_mlp(layers: nn.Sequential, rows: Tensor, half: HalfWeights | None = None) -> Tensor:
    """An mlp() on points as rows, for inference: [B, N, C_in] -> [B, N, C_out]. BatchNorm applies its
    running statistics (as in eval mode, the only mode these models run in), in place."""
    for layer in layers:
        if isinstance(layer, nn.Conv1d):
            rows = linear(rows, layer, half)
        elif isinstance(layer, nn.BatchNorm1d):
            scale = layer.weight * (layer.running_var + layer.eps).rsqrt()
            rows = rows.mul_(scale.to(rows.dtype)).add_((layer.bias - layer.running_mean * scale).to(rows.dtype))
        else:
            rows = rows.relu_()
    return rows


def normalize_keypoints(keypoints: Tensor, image_size: tuple[int, int] | Tensor) -> Tensor:
    """Pixels [B, N, 2] -> centred on the image and scaled by 0.7 of its larger side; image_size
    (width, height), as numbers or a tensor [2]."""
    if torch.is_tensor(image_size):  # [2] (an input of the ONNX export, export.py)
        size = image_size.to(keypoints)
    else:  # made on the device: new_tensor() would copy from the host and stall it until the stream is idle
        size = torch.stack([keypoints.new_full((), v) for v in image_size])
    return (keypoints - size / 2) / (size.max() * 0.7)


class KeypointEncoder(nn.Module):
    """MLP that lifts (x, y, score) of each keypoint to the descriptor dimension."""

    def __init__(self, feature_dim: int, layers: list[int]):
        super().__init__()
        self.encoder = mlp([3] + list(layers) + [feature_dim])

    def forward(self, keypoints: Tensor, scores: Tensor) -> Tensor:
        # [B, N, 2] normalised keypoints, [B, N] scores -> [B, D, N]
        return run_mlp(self.encoder, torch.cat([keypoints, scores.unsqueeze(2)], dim=2)).transpose(1, 2)


class MultiHeadedAttention(nn.Module):
    """Multi-head attention on points as rows. As in the original release, head h owns the channels
    d * num_heads + h."""

    def __init__(self, num_heads: int, d_model: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.merge = nn.Conv1d(d_model, d_model, kernel_size=1)
        self.proj = nn.ModuleList([nn.Conv1d(d_model, d_model, kernel_size=1) for _ in range(3)])

    def forward(self, query: Tensor, key: Tensor, value: Tensor, half: HalfWeights | None = None,
                key_mask: Tensor | None = None) -> Tensor:
        # query [B, N, D], key and value [B, M, D], key_mask None or [B, 1, 1, M] (attention_mask) -> [B, N, D]
        b, n, _ = query.shape
        # [B, N, D] -> [B, N, d, heads] -> [B, heads, N, d], contiguous for the attention kernel
        q, k, v = (linear(x, proj, half).unflatten(2, (self.head_dim, self.num_heads)).permute(0, 3, 1, 2)
                   .contiguous() for proj, x in zip(self.proj, (query, key, value)))
        message = F.scaled_dot_product_attention(q, k, v, key_mask)  # softmax(q k^T / sqrt(d)) v: [B, heads, N, d]
        return linear(message.permute(0, 2, 3, 1).reshape(b, n, -1), self.merge, half)


class AttentionalPropagation(nn.Module):
    """One GNN layer: attend from x to source, then an MLP on [x, message] gives the update of x."""

    def __init__(self, feature_dim: int, num_heads: int):
        super().__init__()
        self.attn = MultiHeadedAttention(num_heads, feature_dim)
        self.mlp = mlp([feature_dim * 2, feature_dim * 2, feature_dim])

    def forward(self, x: Tensor, source: Tensor, half: HalfWeights | None = None,
                source_mask: Tensor | None = None) -> Tensor:
        """x [B, D, N], source [B, D, M] -> update of x [B, D, N]. Computed on points as rows (the
        transposed views [B, N, D]: the kernel-1 convolutions become plain matrix products), so the
        result is a [B, D, N] view of a [B, N, D] tensor. source_mask: attention_mask() of source's
        padding mask (None: every source point is real)."""
        x, source = x.transpose(1, 2), source.transpose(1, 2)
        message = self.attn(x, source, source, half, source_mask)
        return run_mlp(self.mlp, torch.cat([x, message], dim=2), half).transpose(1, 2)


class AttentionalGNN(nn.Module):
    def __init__(self, feature_dim: int, layer_names: list[str], num_heads: int):
        super().__init__()
        self.names = list(layer_names)
        self.layers = nn.ModuleList([AttentionalPropagation(feature_dim, num_heads) for _ in self.names])

    def forward(self, desc0: Tensor, desc1: Tensor, first: int = 0, half: HalfWeights | None = None,
                mask0: Tensor | None = None, mask1: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Layers first, first + 1, ...: 'self' attends within an image, 'cross' to the other one.
        Both images are updated from the same (previous) state. With half, each layer runs in its
        dtype and its update is added to the states in their own (float32) precision. mask0 / mask1:
        padding masks [B, N] / [B, M] (True: a real keypoint); padded points are never attended to."""
        keys0, keys1 = attention_mask(mask0), attention_mask(mask1)
        for layer, name in zip(self.layers[first:], self.names[first:]):
            x0, x1 = (desc0, desc1) if half is None else (desc0.to(half.dtype), desc1.to(half.dtype))
            (src0, keys_of0), (src1, keys_of1) = ((x1, keys1), (x0, keys0)) if name == 'cross' else ((x0, keys0), (x1, keys1))
            desc0, desc1 = desc0 + layer(x0, src0, half, keys_of0), desc1 + layer(x1, src1, half, keys_of1)
        return desc0, desc1


def attention_mask(mask: Tensor | None) -> Tensor | None:
    """Padding mask [B, M] (True: a real keypoint) -> scaled_dot_product_attention's attn_mask [B, 1, 1, M]
    for keys of that image. An image with no real keypoint lets all of them be attended to (its padding):
    attention needs one key, and with no real keypoint on a side nothing is matched anyway."""
    if mask is None:
        return None
    return (mask | ~mask.any(1, keepdim=True))[:, None, None]


def log_update(log_marginal: Tensor, exponents: Tensor, dim: int) -> Tensor:
    """One half of a log-space Sinkhorn iteration: log_marginal - logsumexp(exponents, dim), and -inf where
    the marginal is zero (no -inf - -inf when a whole row or column is -inf)."""
    return torch.where(log_marginal > -torch.inf, log_marginal - torch.logsumexp(exponents, dim), log_marginal)


def log_sinkhorn_iterations(couplings: Tensor, log_mu: Tensor, log_nu: Tensor, iters: int) -> Tensor:
    """Sinkhorn normalisation in log space, the original's: rows sum to exp(log_mu), columns to exp(log_nu).
    A row or column of zero marginal (log -inf: padding) has potential -inf from the start."""
    u, v = torch.zeros_like(log_mu), torch.where(log_nu > -torch.inf, 0, log_nu)  # v = 0 where the marginal is not 0
    for _ in range(iters):
        u = log_update(log_mu, couplings + v.unsqueeze(1), 2)
        v = log_update(log_nu, couplings + u.unsqueeze(2), 1)
    return couplings + u.unsqueeze(2) + v.unsqueeze(1)


def exp_sinkhorn_iterations(couplings: Tensor, log_mu: Tensor, log_nu: Tensor, iters: int) -> Tensor:
    """The iterates of log_sinkhorn_iterations, computed by matrix-vector products in the exp domain,
    stabilised by absorbing large scalings into log-domain potentials (Schmitzer, "Stabilized sparse
    scaling algorithms for entropy regularized transport problems", SIAM J. Sci. Comput. 41(3), 2019,
    Algorithm 2, with a dense kernel: no truncation, no epsilon scaling).

    The iterates are u = f + log(s), v = g + log(t) with potentials f [B, M, 1], g [B, 1, N], scalings
    s, t and the kernel K = exp(couplings + f + g); an iteration is s = mu / (K t), t = nu / (s^T K):
    two matrix-vector products instead of two exp passes over the matrix. It is kept when every
    scaling of a nonzero marginal stays within [1 / SCALING_LIMIT, SCALING_LIMIT]; otherwise (a
    host read decides, free on the CPU) that iteration runs in log space, the potentials take its
    iterates and the kernel is rebuilt: its entries are then the plan's, <= 1. The couplings' span
    only decides how often that happens (with any span, the result is the log-space one). At the
    start f, g are minus the row maxima a and the column maxima b of couplings - a (every kernel
    entry <= 1, a 1 in every row and column) and t = exp(b), i.e. v = 0 (or the first iteration in
    log space when exp(b) is out of range). Rows and columns of zero
    marginal (padding) get scalings 0, potentials -inf. In float64 (float32 sums of 1000 terms would
    double the original's float32 error, test_fidelity.py); the result in couplings' dtype.
    couplings [B, M, N], log_mu [B, M], log_nu [B, N] -> couplings + u + v [B, M, N]."""
    c = couplings.double()
    log_mu, log_nu = log_mu.double(), log_nu.double()
    mu, nu = log_mu.exp().unsqueeze(2), log_nu.exp().unsqueeze(1)

    def in_range(scaling, marginal):
        return ((scaling >= 1 / SCALING_LIMIT) & (scaling <= SCALING_LIMIT) | (marginal == 0)).all()

    f = -c.amax(2, keepdim=True)                        # [B, M, 1]
    g = -(c + f).amax(1, keepdim=True)                  # [B, 1, N], >= 0
    s, t = torch.ones_like(mu), torch.where(nu > 0, (-g).exp(), 0)  # v = 0 to start, as in the log-space updates
    stable = bool(in_range(t, nu))
    if stable:
        kernel = (c + f).add_(g).exp_()
    else:  # v = 0 held as g = 0, t = 1 (-inf where the marginal is 0); the first iteration runs in log space
        g, t = torch.where(nu > 0, 0, -torch.inf), torch.ones_like(t)
    for _ in range(iters):
        if stable:
            s_next = torch.where(mu > 0, mu / (kernel @ t.transpose(1, 2)), 0)       # [B, M, 1]
            t_next = torch.where(nu > 0, nu / (s_next.transpose(1, 2) @ kernel), 0)  # [B, 1, N]
            if in_range(s_next, mu) & in_range(t_next, nu):
                s, t = s_next, t_next
                continue
        # this iteration in log space from v = g + log(t), its iterates absorbed into the potentials
        f = log_update(log_mu, c + (g + t.log()), 2).unsqueeze(2)
        g = log_update(log_nu, c + f, 1).unsqueeze(1)
        kernel = (c + f).add_(g).exp_()
        s, t, stable = torch.ones_like(s), torch.ones_like(t), True
    return (c + (f + s.log())).add_(g + t.log()).to(couplings.dtype)  # not in place: c may be couplings


def sinkhorn(couplings: Tensor, log_mu: Tensor, log_nu: Tensor, iters: int) -> Tensor:
    """log_sinkhorn_iterations, on the CPU through exp_sinkhorn_iterations (about 6x faster there, within
    the original's float32 rounding, for couplings of any span; its host reads are free on the CPU). On a
    GPU the log-space updates run as they are: fast there, and with no host read between the GNN and
    Sinkhorn of a camera's stream. In an ONNX export: the log-space updates (a graph with no host read)."""
    if torch.onnx.is_in_onnx_export():
        return log_sinkhorn_iterations(couplings, log_mu, log_nu, iters)
    if couplings.device.type == 'cpu' and iters > 0:
        return exp_sinkhorn_iterations(couplings, log_mu, log_nu, iters)
    return log_sinkhorn_iterations(couplings, log_mu, log_nu, iters)


def log_optimal_transport(scores: Tensor, alpha: Tensor, iters: int, mask0: Tensor | None = None,
                          mask1: Tensor | None = None) -> Tensor:
    """Optimal transport with a dustbin row and column of score alpha.

    scores [B, M, N] -> log assignment [B, M + 1, N + 1], scaled so that a certain match is 1.
    mask0 [B, M], mask1 [B, N]: padding masks (True: a real keypoint; None: all real). Padded rows and
    columns get zero marginals (their entries -inf), the dustbins the other side's real count, and the
    normalisation is by the real counts: the real entries are those of the unpadded problem."""
    b, m, n = scores.shape
    real0 = scores.new_ones((b, m), dtype=torch.bool) if mask0 is None else mask0
    real1 = scores.new_ones((b, n), dtype=torch.bool) if mask1 is None else mask1
    if mask0 is not None or mask1 is not None:  # padded entries: any finite value, 0 keeps the span small
        scores = scores.masked_fill(~(real0[:, :, None] & real1[:, None]), 0)
    # counts on the device: no host stall (see normalize_keypoints)
    ms, ns = real0.sum(1, keepdim=True).to(scores), real1.sum(1, keepdim=True).to(scores)  # [B, 1]
    alpha = alpha.to(scores)
    couplings = torch.cat([torch.cat([scores, alpha.expand(b, m, 1)], -1),
                           torch.cat([alpha.expand(b, 1, n), alpha.expand(b, 1, 1)], -1)], 1)
    norm = -(ms + ns).clamp(min=1).log()  # [B, 1]; (clamped: 0 with no real keypoint on either side)
    none = scores.new_full((), -torch.inf)
    log_mu = torch.cat([torch.where(real0, norm, none), ns.log() + norm], 1)  # each point 1, the dustbin the other side's count
    log_nu = torch.cat([torch.where(real1, norm, none), ms.log() + norm], 1)
    z = sinkhorn(couplings, log_mu, log_nu, iters)
    return z - norm[:, :, None]  # probabilities times M + N


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
        # live settings, defaults and accepted values from settings.py:
        # sinkhorn_iterations 100, match_threshold 0.2
        **defaults('superglue'),
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
        self.half_weights = None  # HalfWeights of the GNN layers (set_precision), None: all float32
        self._half_by_dtype = {}  # dtype -> HalfWeights: switching precision back does not convert again

    def set_precision(self, name: str, check_hardware: bool = True):
        """'fp32' (the default): the original computation. 'bf16' / 'fp16': the GNN layers (attention
        projections, attention, merge and MLPs; 99% of the operations) in that dtype, with weight copies
        made once (precision.HalfWeights); each layer's update is added to the float32 state. In float32:
        the keypoint encoder, the final projection, the score matrix, Sinkhorn and the mutual check.

        ValueError when the model's device has no fast kernels for `name` (precision.check_precision
        says what is missing and what to use instead). check_hardware=False runs it anyway, in slow
        reference kernels with the same numerics: for numerics checks on any machine."""
        dtype = check_precision(name, self.bin_score.device if check_hardware else None)
        self.half_weights = None if dtype == torch.float32 else self._half_by_dtype.setdefault(dtype, HalfWeights(dtype))

    def encode(self, keypoints: Tensor, scores: Tensor, descriptors: Tensor, image_size: tuple[int, int],
               mask: Tensor | None = None) -> Tensor:
        """keypoints [B, N, 2] pixels, scores [B, N], descriptors [B, D, N], image_size (width, height)
        -> [B, D, N]: descriptors plus keypoint encoding, then the first GNN layer if it is 'self'.
        mask: None, or bool [B, N], True for a real keypoint, False for padding (any finite values):
        padded points are not attended to, so the real points' encodings are those without them."""
        b, n = scores.shape
        if keypoints.shape != (b, n, 2) or descriptors.shape != (b, self.config['descriptor_dim'], n):
            raise ValueError(f'SuperGlue.encode expects keypoints [B, N, 2], scores [B, N], descriptors '
                             f'[B, {self.config["descriptor_dim"]}, N]; got {tuple(keypoints.shape)}, '
                             f'{tuple(scores.shape)}, {tuple(descriptors.shape)}')
        if n == 0:
            return descriptors
        keypoints = normalize_keypoints(full_precision(keypoints), image_size).to(descriptors.dtype)
        # points as rows in memory ([B, D, N] view of [B, N, D]), as every GNN layer computes them
        desc = self.kenc(keypoints, scores.to(descriptors.dtype)) + descriptors
        if self.encoded_layers:
            half = self.half_weights
            x = desc if half is None else desc.to(half.dtype)
            desc = desc + self.gnn.layers[0](x, x, half, attention_mask(mask))
        return desc

    def score_matrix(self, encoded0: Tensor, encoded1: Tensor, mask0: Tensor | None = None,
                     mask1: Tensor | None = None) -> Tensor:
        """Two encode() outputs [B, D, N], [B, D, M] (N, M >= 1) -> score matrix [B, N, M] (float32, or
        float64 for a float64 model): remaining GNN layers, final projection, scaled dot products.
        mask0 [B, N], mask1 [B, M]: padding masks as in encode() (padded points are not attended to)."""
        desc0, desc1 = (e.transpose(1, 2).contiguous().transpose(1, 2) for e in (encoded0, encoded1))  # as rows
        desc0, desc1 = self.gnn(desc0, desc1, first=self.encoded_layers, half=self.half_weights,
                                mask0=mask0, mask1=mask1)
        mdesc0, mdesc1 = (linear(d.transpose(1, 2), self.final_proj) for d in (desc0, desc1))  # [B, N, D]
        # optimal transport in (at least) float32, also for a half-precision model: 100 iterations need it
        return full_precision(mdesc0 @ mdesc1.transpose(1, 2) / self.config['descriptor_dim'] ** 0.5)

    def log_assignment(self, encoded0: Tensor, encoded1: Tensor, mask0: Tensor | None = None,
                       mask1: Tensor | None = None) -> Tensor:
        """Two encode() outputs [B, D, N], [B, D, M] (N, M >= 1) -> log assignment [B, N + 1, M + 1]
        (float32, or float64 for a float64 model; last row and column: the dustbins), the input of
        match()'s mutual check: score_matrix, then Sinkhorn. mask0 [B, N], mask1 [B, M]: padding masks
        as in encode(); padded rows and columns are -inf and the others those of the unpadded images
        (log_optimal_transport)."""
        return log_optimal_transport(self.score_matrix(encoded0, encoded1, mask0, mask1), self.bin_score,
                                     self.config['sinkhorn_iterations'], mask0, mask1)

    def match(self, encoded0: Tensor, encoded1: Tensor, mask0: Tensor | None = None,
              mask1: Tensor | None = None) -> dict:
        """Two encode() outputs [B, D, N], [B, D, M] -> 'matches0' [B, N] (index in image 1, -1 = none),
        'matches1' [B, M], 'matching_scores0' [B, N], 'matching_scores1' [B, M] (float32).
        mask0 [B, N], mask1 [B, M]: padding masks as in encode() (the same ones): a padded keypoint gets
        match -1 and score 0, and the real ones those of the unpadded images. Computed with no host read
        and no branch on tensor values (exportable to ONNX at fixed N, M)."""
        b, _, n = encoded0.shape
        m = encoded1.shape[2]
        scores = (self.score_matrix(encoded0, encoded1, mask0, mask1) if n and m
                  else encoded0.new_zeros((b, n, m), dtype=torch.float))
        return self.matches_from_scores(scores, mask0, mask1)

    def matches_from_scores(self, scores: Tensor, mask0: Tensor | None = None, mask1: Tensor | None = None) -> dict:
        """match() from the score matrix [B, N, M] (score_matrix; mask0, mask1 as there): Sinkhorn with
        this model's bin score and sinkhorn_iterations, then the mutual check at match_threshold. Every
        backend's score matrix goes through here (matcher.py: also one computed by onnxruntime)."""
        b, n, m = scores.shape
        if n == 0 or m == 0:
            return {'matches0': scores.new_full((b, n), -1, dtype=torch.long),
                    'matches1': scores.new_full((b, m), -1, dtype=torch.long),
                    'matching_scores0': scores.new_zeros((b, n), dtype=torch.float),
                    'matching_scores1': scores.new_zeros((b, m), dtype=torch.float)}
        config = self.config
        check_superglue_config(config)
        scores = log_optimal_transport(scores, self.bin_score, config['sinkhorn_iterations'], mask0, mask1)[:, :-1, :-1]
        if mask0 is not None or mask1 is not None:  # padded entries never win a maximum
            real0 = mask0[:, :, None] if mask0 is not None else True
            real1 = mask1[:, None] if mask1 is not None else True
            scores = scores.masked_fill(~(real0 & real1), -torch.inf)

        # mutual nearest neighbours in the assignment, above the threshold
        max0, max1 = scores.max(2), scores.max(1)
        indices0, indices1 = max0.indices, max1.indices
        mutual0 = torch.arange(n, device=scores.device)[None] == indices1.gather(1, indices0)
        mutual1 = torch.arange(m, device=scores.device)[None] == indices0.gather(1, indices1)
        if mask0 is not None:
            mutual0 = mutual0 & mask0
        if mask1 is not None:
            mutual1 = mutual1 & mask1
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
    """ValueError naming the bad SuperGlue setting and what is allowed (live settings: settings.py)."""
    def is_int(x):
        return isinstance(x, Integral) and not isinstance(x, bool)

    check_all({name: config[name] for name in names('superglue')})
    dim, heads = config['descriptor_dim'], config['num_heads']
    if not is_int(dim) or not is_int(heads) or dim < 1 or heads < 1 or dim % heads:
        raise ValueError(f'descriptor_dim ({dim!r}) must be a positive multiple of num_heads ({heads!r})')
    if not all(is_int(c) and c > 0 for c in config['keypoint_encoder']):
        raise ValueError(f'keypoint_encoder must be a list of positive layer sizes, got {config["keypoint_encoder"]!r}')
    if isinstance(config['gnn_layers'], str) or not all(name in ('self', 'cross') for name in config['gnn_layers']):
        raise ValueError(f"gnn_layers must be a list of 'self' / 'cross', got {config['gnn_layers']!r}")
