"""data concern of fedface_jax."""
