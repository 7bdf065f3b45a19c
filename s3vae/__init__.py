"""S3VAE: Self-Supervised Sequential VAE (Zhu et al., CVPR 2020), reproduced.

Sub-modules: ``model`` (the sequential VAE, eq. 1-4), ``losses`` (eq. 5-9), ``data`` (HDF5 shards),
``train`` (resumable training loop), ``evaluate`` (judge classifiers and Appendix C metrics),
``datasets`` (dataset recipes: Sprites).
"""

__version__ = "0.1.0"
