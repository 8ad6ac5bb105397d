"""Helpers every merge method shares: weight broadcasting and seeded generators."""

import hashlib

import torch


def broadcast_weights(weights: torch.Tensor, stacked: torch.Tensor) -> torch.Tensor:
    """Reshape per-model weights of shape (n,) to broadcast over stacked tensors of shape (n, ...)."""
    return weights.reshape(weights.shape + (1,) * (stacked.dim() - 1))


def as_weights(values, reference: torch.Tensor) -> torch.Tensor:
    """Per-model weights as a float32 tensor on the reference tensor's device."""
    return torch.as_tensor(values, dtype=torch.float32, device=reference.device)


def tensor_seed(seed: int, tensor_name: str, stream: str = "") -> int:
    """Derive a reproducible 63-bit seed from the run seed, a tensor name and a stream label.

    SHA-256 keeps the value independent of Python's per-process string hash randomisation, so
    the same run seed gives the same DARE masks in every process and on every machine.
    """
    digest = hashlib.sha256(f"{seed}\x00{tensor_name}\x00{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seeded_generator(seed: int, tensor_name: str, stream: str = "") -> torch.Generator:
    return torch.Generator().manual_seed(tensor_seed(seed, tensor_name, stream))
