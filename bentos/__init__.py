"""Online inference: one BentoML service per model family behind one HTTP entry service."""
