"""Use cases as plain typed functions. Nothing here imports Flask."""
