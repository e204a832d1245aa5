"""A deployed model's life: registry, drift, monitoring, choosing k, streaming updates.
Imports every layer below it, never app."""
