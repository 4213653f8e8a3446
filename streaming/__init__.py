"""The streaming path: transactions on a Redis Stream, a consumer that keeps each customer's
windows and pushes fresh features to the online store, and a producer that replays a file."""
