"""A prelude for subprocess tests: prepended to ``python -c`` code, it makes ``import torch``
fail as on a machine where torch is not installed (the inference path must not need it)."""

import textwrap

NO_TORCH = textwrap.dedent(
    """
    import sys
    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, _NoTorch())
    """
)
