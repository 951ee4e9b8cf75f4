"""The backend-parametrised conformance suite: one set of tests, every backend."""
