"""Offline pipeline: transactions -> point-in-time customer features -> models in the MLflow registry."""
