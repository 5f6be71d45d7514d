"""Inference precision: names, what the hardware offers, and the half-precision weight copies.

'fp32' runs the original computation. 'bf16' / 'fp16' run the parts of SuperPoint and SuperGlue
that do not move decisions in half precision (SuperPoint.set_precision, SuperGlue.set_precision
list them) and keep the rest in float32.

Where half precision is fast:
  CPU   bf16 only, on processors with AMX-BF16 or AVX512-BF16 (Intel Cooper Lake / Sapphire Rapids
        and later, AMD Zen 4 and later), read from the /proc/cpuinfo flags. Elsewhere torch runs
        bf16 in slow reference kernels (benchmarks/benchmark_core.py on an AVX2 EPYC: a 1024 x 512 x
        512 matrix product at 1.4 GFLOP/s in bf16, 95 in fp32), so it is refused. fp16 is refused on
        every CPU.
  CUDA  fp16 on every GPU; bf16 where torch.cuda.is_bf16_supported() (compute capability >= 8.0).

    check_precision('bf16', torch.device('cpu'))  # ValueError on a CPU without AMX / AVX512-BF16
"""
from pathlib import Path

import torch
from torch import Tensor, nn

from .settings import check

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
CPU_BF16_FLAGS = ('amx_bf16', 'avx512_bf16')  # /proc/cpuinfo names of the instructions that make bf16 fast


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (Linux); empty where it cannot be read."""
    try:
        text = Path('/proc/cpuinfo').read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith('flags'):
            return set(line.split(':', 1)[1].split())
    return set()


def cpu_bf16_support() -> list[str]:
    """Which of CPU_BF16_FLAGS this CPU has (empty: bf16 would run in slow reference kernels)."""
    flags = cpu_flags()
    return [flag for flag in CPU_BF16_FLAGS if flag in flags]


def cpu_model_name() -> str:
    """The 'model name' of /proc/cpuinfo, e.g. 'AMD EPYC', or 'unknown CPU'."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return 'unknown CPU'


def cpu_description() -> str:
    """e.g. 'AMD EPYC (torch CPU capability AVX2, no amx_bf16 / avx512_bf16)'."""
    bf16 = cpu_bf16_support()
    return (f'{cpu_model_name()} (torch CPU capability {torch.backends.cpu.get_cpu_capability()}, '
            + (f'bf16: {" + ".join(bf16)})' if bf16 else f'no {" / ".join(CPU_BF16_FLAGS)})'))


def check_precision(name: str, device: torch.device | str | None) -> torch.dtype:
    """The torch dtype of precision `name` ('fp32', 'bf16', 'fp16') on `device`.

    ValueError, naming what is missing and what to use instead, for an unknown name, fp16 on a CPU,
    bf16 on a CPU without AMX-BF16 / AVX512-BF16, or bf16 on a GPU without bf16 support. device
    None checks the name only.
    """
    name = check('precision', name)  # settings.py: the accepted names and the message
    if name == 'fp32' or device is None:
        return DTYPES[name]
    device = torch.device(device)
    if device.type == 'cpu':
        if name == 'fp16':
            raise ValueError("precision 'fp16' is for CUDA GPUs: torch has no fast fp16 kernels for CPUs; "
                             "on the CPU use 'bf16' (needs AMX-BF16 or AVX512-BF16) or 'fp32'")
        if not cpu_bf16_support():
            raise ValueError(f"precision 'bf16' refused: this CPU ({cpu_model_name()}) has neither AMX-BF16 nor "
                             f"AVX512-BF16 (/proc/cpuinfo flags {' / '.join(CPU_BF16_FLAGS)}), so bf16 would run "
                             f"many times slower than fp32; use precision 'fp32'")
    elif device.type == 'cuda' and name == 'bf16' and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision 'bf16' refused: {torch.cuda.get_device_name(device)} has no bf16 support "
                         f"(compute capability < 8.0); use precision 'fp16' or 'fp32'")
    return DTYPES[name]


def full_precision(x: Tensor) -> Tensor:
    """x in float32 when it is half precision; float32 / float64 as it is."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class HalfWeights:
    """Copies of module weights in a half-precision dtype, made on first use and made again only when
    the weights change (load_state_dict writes them in place, .to(device) replaces them), so the
    conversion is paid once, not per call. The module's own parameters stay float32. (A model built
    under torch.inference_mode has weights without a version counter: load weights into it outside.)"""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self.copies = {}  # id(module) -> (version key, weight, bias)

    def __call__(self, module: nn.Module) -> tuple[Tensor, Tensor | None]:
        """(weight, bias) of a Conv / Linear module in self.dtype (bias None when it has none)."""
        weight, bias = module.weight, module.bias
        # an inference tensor (a model built under torch.inference_mode) has no version counter
        key = tuple((t.data_ptr(), -1 if t.is_inference() else t._version, t.device)
                    for t in (weight, bias) if t is not None)
        entry = self.copies.get(id(module))
        if entry is None or entry[0] != key:
            entry = (key, weight.detach().to(self.dtype), None if bias is None else bias.detach().to(self.dtype))
            self.copies[id(module)] = entry
        return entry[1], entry[2]
