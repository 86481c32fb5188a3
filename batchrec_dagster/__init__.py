"""batchrec: hourly RecVAE retraining on Dagster, with a model registry and a serving API."""

__version__ = "0.1.0"
