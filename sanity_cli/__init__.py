"""sanity: sanity checks for saliency maps (Adebayo et al., NeurIPS 2018, arXiv:1810.03292).

`from sanity_cli import check` is the Python API (sanity_cli/api.py); it is imported on first use, so the
command line starts without TensorFlow."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`check` and `Result`, loaded when first asked for: the package itself imports none of its modules (they
    import it), so it adds no import cycle and no start-up cost."""
    if name in ("check", "Result"):
        import importlib

        return getattr(importlib.import_module(f"{__name__}.api"), name)
    raise AttributeError(f"module 'sanity_cli' has no attribute {name!r}")
