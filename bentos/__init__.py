"""What runs inside the bento: one BentoML service whose worker processes answer the public routes
and score each family's requests in the process (bentos/service.py)."""
