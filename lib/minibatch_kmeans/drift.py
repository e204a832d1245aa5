"""Moved to :mod:`minibatch_kmeans.lifecycle.drift`; this import
path stays for existing code."""
from .lifecycle.drift import *  # noqa: F401,F403
