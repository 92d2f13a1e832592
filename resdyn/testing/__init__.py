"""Support for tests and benchmarks: synthetic runs with the real data contract, built without a
model (``synthetic``: the foundation stages; ``synthetic_geometry``: the geometry stages of a wide
synthetic run, block by block). Not used by the product itself."""
