"""Precompute pipeline (torch, transformers): model → activations → Jacobians → spectra → ... → run store."""
