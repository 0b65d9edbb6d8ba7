"""Pure array kernels (arrays in, arrays out or updated in place; no I/O)."""
from .registry import KernelBackend, get_kernels, kernel_backends, register_kernels

__all__ = ["KernelBackend", "get_kernels", "kernel_backends", "register_kernels"]
