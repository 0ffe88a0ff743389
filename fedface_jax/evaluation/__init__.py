"""evaluation concern of fedface_jax."""
