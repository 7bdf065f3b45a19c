"""S3VAE: Self-Supervised Sequential VAE (Zhu et al., CVPR 2020), reproduced.

The paper's model and its training: ``model`` (the sequential VAE, eq. 1-4), ``losses`` (eq. 5-9),
``train`` (resumable training loop), ``data`` (HDF5 shards), ``configs`` (config dict -> dataclass
fields), ``utils``. Around it, by role: ``datasets`` (dataset recipes), ``evaluation`` (judge,
Appendix C metrics, speaker verification), ``comparisons`` (MoCoGAN, MonkeyNet, FHVAE), ``reporting``
(tables, figures, training curves).
"""

__version__ = "0.1.0"
