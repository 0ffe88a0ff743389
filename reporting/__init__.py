"""Orchestration and reporting: which runs make up a table, and how RESULTS.md / BENCHMARKS.md
print them.

Dependencies go one way: `fedface_jax` (math, models, data, engine, evaluation, attack primitives)
<- `experiments` (configs) <- `reporting` (drivers, tables, report writers) <- `launch` (absl
flags and one call). Nothing in `fedface_jax/` imports this package.
"""
