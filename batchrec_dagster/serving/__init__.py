"""The serving API: the best registered model behind FastAPI, hot-swapped without downtime."""
