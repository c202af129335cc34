"""Backends that run the stages (albumfix.stages) for the driver (albumfix/pipeline.py): `local`
in this process, `ray_cluster` on a Ray cluster. Each takes the same inputs and gives the same
results, so a run's outputs do not depend on where it ran."""
