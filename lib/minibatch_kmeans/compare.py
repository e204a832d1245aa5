"""Moved to :mod:`minibatch_kmeans.evaluate.compare`; this import
path stays for existing code."""
from .evaluate.compare import *  # noqa: F401,F403
