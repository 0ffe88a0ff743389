"""benchmark concern of fedface_jax."""
