"""attack concern of fedface_jax."""
