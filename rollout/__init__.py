"""Operators' tools for model versions: canary, promote, rollback and status (`python -m rollout`),
the promotion gates and the quality figures they read, and importing champions into the bento."""
