"""batchrec: hourly RecVAE retraining on Dagster, with a model registry and a serving API."""

from batchrec_dagster.settings import prefer_passive_openmp_waiting

prefer_passive_openmp_waiting()  # before anything imports torch

__version__ = "0.1.0"
