"""training concern of fedface_jax."""
