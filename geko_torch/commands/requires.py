"""What the torch-side commands need installed, checked before they set up or run."""
from __future__ import annotations

__all__ = ["require_torch"]


def require_torch(command: str) -> None:
    """MissingDependencyError with the install hint when torch or transformers is missing (the plain
    ``geko-engine`` install is the engine alone)."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        from geko_state.plots import MissingDependencyError

        raise MissingDependencyError(f"geko {command} needs torch and transformers: "
                                     f"pip install 'geko-engine[hf]' ({e})") from None
