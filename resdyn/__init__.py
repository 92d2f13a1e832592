"""resdyn: the residual stream of a transformer language model as a dynamical system.

Data flows compute -> store -> query -> figure -> page:
``resdyn.compute`` (torch) writes runs, ``resdyn.core`` (no torch) reads them.
"""

__version__ = "0.1.0"
