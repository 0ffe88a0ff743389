"""benchmark concern of fedface_jax: throughput / memory measurements.

`workload.py` defines the shared benchmark workload (model, data, objective, FedAvg) that our
engine and the peer frameworks (`scripts/peers/`) all run, so client-updates/s are comparable.
"""
