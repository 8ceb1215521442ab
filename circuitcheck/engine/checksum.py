"""Checksums of tensors' contents: what notices weights edited behind autograd's back.

A parameter edited through ``.data`` (or copied into by code that bypasses its
version counter) keeps its data pointer and version, so only its bytes can
tell. :func:`content_checksums` reads every byte of every tensor:

- on the CPU, xxHash3 (64 bit) of the tensor's bytes, read in place (about
  1.5 GB/s per core; one pass over the memory);
- on an accelerator, a weighted sum of the tensor's bit patterns computed on
  the device (no copy to the host): each element's bits, viewed as an integer
  of the element's width, times a fixed odd multiplier for its position,
  summed with wrap-around. Changing any one element always changes the sum
  (an odd multiplier is invertible modulo a power of two); several changes
  cancel only by a coincidence of about one in 2**32.

Tensors without data (``meta``) have no checksum (``None``).
"""

from __future__ import annotations

from typing import Iterable

import torch
import xxhash

# Positions per row of the device checksum; rows get their own odd multipliers.
_ROW = 1 << 16
# Elements per block on the device, so that the temporary product stays small.
_BLOCK = 1 << 24
_INT_OF_WIDTH = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_MULTIPLIERS: dict[tuple[torch.dtype, str], torch.Tensor] = {}
_ROW_MULTIPLIERS: dict[str, torch.Tensor] = {}


def content_checksums(tensors: Iterable[torch.Tensor]) -> tuple:
    """One checksum per tensor (an ``int``, or ``None`` for a tensor without data), in order."""
    out: list = []
    pending: list[tuple[int, torch.Tensor]] = []  # device sums, read back in one transfer per device
    for tensor in tensors:
        tensor = tensor.detach()
        if tensor.is_meta or tensor.layout != torch.strided:
            out.append(None)
        elif tensor.device.type == "cpu":
            out.append(_host_checksum(tensor))
        else:
            pending.append((len(out), _device_checksum(tensor)))
            out.append(None)
    if pending:
        by_device: dict[torch.device, list[tuple[int, torch.Tensor]]] = {}
        for index, value in pending:
            by_device.setdefault(value.device, []).append((index, value))
        for entries in by_device.values():
            values = torch.stack([value for _, value in entries]).tolist()
            for (index, _), value in zip(entries, values):
                out[index] = value
    return tuple(out)


def _bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as a flat ``uint8`` tensor (a view where it is contiguous)."""
    return tensor.contiguous().reshape(-1).view(torch.uint8)


def _host_checksum(tensor: torch.Tensor) -> int:
    return xxhash.xxh3_64_intdigest(memoryview(_bytes(tensor).numpy()))


def _device_checksum(tensor: torch.Tensor) -> torch.Tensor:
    """A 0-dim ``int64`` tensor on the tensor's device (see the module's docstring)."""
    width = tensor.element_size()
    int_dtype = _INT_OF_WIDTH.get(width)
    flat = tensor.contiguous().reshape(-1)
    bits = flat.view(int_dtype) if int_dtype is not None else _bytes(flat)
    weights = _multipliers(bits.dtype, bits.device)
    rows = _row_multipliers(bits.device, -(-bits.numel() // _ROW))
    total = torch.zeros((), dtype=torch.int64, device=bits.device)
    for start in range(0, bits.numel(), _BLOCK):
        block = bits[start : start + _BLOCK]
        full = block.numel() // _ROW * _ROW
        first_row = start // _ROW
        if full:
            # The product wraps at the element's width, the row sums are exact in int64.
            sums = (block[:full].view(-1, _ROW) * weights).sum(1, dtype=torch.int64)
            total = total + (sums * rows[first_row : first_row + sums.numel()]).sum()
        if full < block.numel():
            rest = block[full:]
            row = first_row + full // _ROW
            total = total + (rest * weights[: rest.numel()]).sum(dtype=torch.int64) * rows[row]
    return total


def _multipliers(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (dtype, str(device))
    if key not in _MULTIPLIERS:
        generator = torch.Generator().manual_seed(0x5EED)
        bits = 8 * torch.empty((), dtype=dtype).element_size()
        # Odd and within the signed range of the element's width, so the cast keeps them exact.
        values = torch.randint(0, 2 ** min(bits - 1, 62), (_ROW,), generator=generator, dtype=torch.int64) | 1
        _MULTIPLIERS[key] = values.to(dtype).to(device)
    return _MULTIPLIERS[key]


def _row_multipliers(device: torch.device, n_rows: int) -> torch.Tensor:
    key = str(device)
    have = _ROW_MULTIPLIERS.get(key)
    if have is None or have.numel() < n_rows:
        size = max(n_rows, 1 << 12)
        generator = torch.Generator().manual_seed(0xC0FFEE)
        _ROW_MULTIPLIERS[key] = (torch.randint(0, 2**62, (size,), generator=generator, dtype=torch.int64) | 1).to(device)
    return _ROW_MULTIPLIERS[key]
