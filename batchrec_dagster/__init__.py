"""batchrec: hourly RecVAE retraining on Dagster, with a model registry and a serving API."""

import os

# Must be set before torch starts OpenMP. With the default (active) waiting, torch's threads spin
# while idle, and training on a machine shared with the webserver, the daemon or the serving API
# ran 3-5x slower (benchmarks/results/recvae.md); passive waiting costs nothing measurable alone.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
