"""The paper's comparison systems, trained in the same pipeline: MoCoGAN, MonkeyNet, FHVAE."""
