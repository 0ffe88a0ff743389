"""models concern of fedface_jax."""
