"""fedface_jax: federated face recognition (FedFace) and curious-client inversion in JAX."""

__version__ = "0.1.0"
