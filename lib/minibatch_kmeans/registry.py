"""Moved to :mod:`minibatch_kmeans.lifecycle.registry`; this import
path stays for existing code."""
from .lifecycle.registry import *  # noqa: F401,F403
