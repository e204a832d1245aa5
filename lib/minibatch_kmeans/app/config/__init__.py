"""Job configuration: YAML loaded with ``yaml.safe_load`` into frozen dataclasses, one
module per job family (train, score, monitor, stream) over the shared sections.

A config file has these sections::

    spark:    {app_name, master, conf: {name: value}}     # master only for a local session
    input:    {path, format: parquet, features: {inputCols: [...]} or {featuresCol: name},
               weightCol}
    model:    {k, maxIter, tol, seed, initMode, ...}      # MiniBatchKMeans Params by name
    output:   {dir, model, summary, plot}                 # model/summary/plot default under dir
    logging:  {level}
    compare:  {mllib: {solver, ...}, sample_size, local_max_mb, references,
               trajectory_points, handle_invalid, warm_up_rows, repeats}  # jobs/compare.py only
    tune:     {k: [...], batch_sizes, holdout_fraction, sample_size}  # jobs/tune.py only

Every field is validated: a bad value or an unknown key raises :class:`ConfigError`
naming the field path, the value given and what was expected. ``--set key=value``
overrides use dotted keys (``model.k=20``, ``spark.conf.spark.sql.shuffle.partitions=8``)
and values parsed as YAML, so numbers, booleans, null and ``[lists]`` work.

Spark settings whose names contain key, secret, token or password are never shown, in
logs, reprs or error messages.

Examples
--------
>>> cfg = Config.from_dict({"input": {"path": "out/data/blobs",
...                                   "features": {"inputCols": ["x0", "x1"]}},
...                         "model": {"k": 3}, "output": {"dir": "out/train"}})
>>> cfg.model["k"], cfg.output.model, cfg.output.plot
(3, 'out/train/model', 'out/train/convergence.png')
>>> sorted(cfg.estimator_params())
['inputCols', 'k']
"""
from .files import LOG_LEVELS, apply_override, configure_logging, read_yaml, run_id_override
from .monitor import (DRIFT_FILES, AbsoluteGate, DriftFiles, MonitorConfig, MonitorSettings,
                      load_monitor_config)
from .score import ScoreConfig, ScoringConfig, load_score_config
from .sections import InputConfig, LoggingConfig, MlflowConfig, OutputConfig, SparkConfig
from .stream import StreamConfig, StreamSettings, load_stream_config
from .train import CompareConfig, Config, TuneConfig, load_config

__all__ = [
    "AbsoluteGate", "CompareConfig", "Config", "DRIFT_FILES", "DriftFiles", "InputConfig",
    "LOG_LEVELS", "LoggingConfig", "MlflowConfig", "MonitorConfig", "MonitorSettings",
    "OutputConfig", "ScoreConfig", "ScoringConfig", "SparkConfig", "StreamConfig",
    "StreamSettings", "TuneConfig", "apply_override", "configure_logging", "load_config",
    "load_monitor_config", "load_score_config", "load_stream_config", "read_yaml",
    "run_id_override",
]
