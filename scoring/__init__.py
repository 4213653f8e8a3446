"""The model layer: a version loaded from the registry or the bento's model store, its trees
compiled to a numba walk, and each family's scorer (scoring/<family>.py) over a feature reader.
It imports neither BentoML nor the HTTP code: the service, training (the served reference),
monitoring (windows without scores) and rollout (the quality guard) all score through it.

    loaded = loading.from_registry("churn", "3", tracking_uri, cache_dir)
    scores = frames.score_frame(loaded, features)
"""
