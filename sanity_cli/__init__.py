"""sanity: sanity checks for saliency maps (Adebayo et al., NeurIPS 2018, arXiv:1810.03292).

`from sanity_cli import check` is the Python API (sanity_cli/api.py); it is imported on first use, so the
command line starts without TensorFlow."""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("check", "Result"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'sanity_cli' has no attribute {name!r}")
