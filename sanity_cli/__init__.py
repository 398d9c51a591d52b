"""sanity: sanity checks for saliency maps (Adebayo et al., NeurIPS 2018, arXiv:1810.03292)."""

__version__ = "0.1.0"
