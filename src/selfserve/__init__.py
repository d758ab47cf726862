"""selfserve: record LLM traffic, replay it in a calibrated digital twin of the cluster,
learn routing heuristics that beat hand-written routers, and deploy them behind a canary."""

__version__ = "0.1.0"
