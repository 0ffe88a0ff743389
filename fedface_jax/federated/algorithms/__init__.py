"""Federated algorithms as plug-ins: one module each, `make(cfg) -> hooks.AlgorithmHooks`.

`algorithm.ALGORITHM_OF` maps a `federated.method` to its module here; docs/DEVELOPING.md
("How to add an algorithm") walks through adding one.
"""
