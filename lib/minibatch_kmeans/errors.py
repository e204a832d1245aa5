"""The project's error hierarchy.

Every error that a user can cause with bad input or bad parameters subclasses both
:class:`MiniBatchKMeansError` (catch everything from this package) and ``ValueError``
(what Python code expects from bad values). Messages name what was given and what was
expected, for example "initial centers have shape (3, 5) but k=4 and 5 features".
"""


class MiniBatchKMeansError(Exception):
    """Base class of every error raised on purpose by minibatch_kmeans."""


class InvalidParamError(MiniBatchKMeansError, ValueError):
    """A parameter value is outside what the algorithm accepts."""


class InvalidInputError(MiniBatchKMeansError, ValueError):
    """The input data cannot be clustered as given (empty, wrong types, invalid rows...)."""


class ConfigError(MiniBatchKMeansError, ValueError):
    """A job configuration file or override is invalid."""


class ModelPersistenceError(MiniBatchKMeansError, ValueError):
    """A model or estimator cannot be saved to, or loaded from, the given path."""


class ConcurrentWriteError(InvalidInputError):
    """Another writer changed a table while this write was in progress, in a way this
    write cannot be committed over (the same partition, or the table's schema): nothing of
    this write was committed. Re-run it once the other writer is done."""
