"""Monitoring: the inference log, drift reports, metrics and alert rules."""
