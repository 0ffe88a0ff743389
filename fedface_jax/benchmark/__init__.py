"""benchmark concern of fedface_jax: throughput / memory measurements.

`workload.py` defines the shared benchmark workload (model, data, objective, FedAvg) that our
engine and the peer frameworks (`scripts/peers/`) all run, so client-updates/s are comparable.
`strategies.py` runs one round of it several ways (sequential loops, the engine's vmap/shard
round, the centralised ceiling), `measure.py` holds the FLOP/memory/timing helpers and
`worker.py` the rows one worker process measures (a device count's sweep, the class-table step).
The subprocess orchestration, the peers and BENCHMARKS.md are `reporting/benchmark_suite.py` and
`reporting/benchmark_report.py`.
"""
