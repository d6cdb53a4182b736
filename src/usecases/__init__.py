"""Use cases: one module per capability, depending on the domain (and its ports) only."""
