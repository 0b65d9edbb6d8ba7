"""``python -m geko_torch.app``: the same as ``geko app``."""
import sys

from .cli import main

sys.exit(main())
