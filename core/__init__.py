"""What training, serving, rollout and monitoring share, kept light: settings, the data contract's
vocabularies, the feature lists, request-time features, decisions, the per-family facts, the
registry's roles and tags, and opening the feature store. Imports neither BentoML nor training code."""
