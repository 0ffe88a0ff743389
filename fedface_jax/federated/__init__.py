"""federated concern of fedface_jax."""
