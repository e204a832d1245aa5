"""What the Databricks notebooks in ``notebooks/`` share: widgets that fall back to their
defaults without ``dbutils``, the session, and showing tables and pictures.

A notebook passes its own globals, where Databricks puts ``spark``, ``dbutils``,
``display`` and ``displayHTML``; run as a plain script (``python notebooks/01_...py``) none
of them exists, and these helpers fall back to a local session, the widget defaults (or
``MBKM_<NAME>`` environment variables, which is how tests make the data small) and
printing.

Where a notebook writes by default depends on where it runs, by one rule
(:meth:`Notebook.default`): on Databricks (``DATABRICKS_RUNTIME_VERSION`` set, as on every
Databricks cluster and serverless compute) a Unity Catalog volume, :data:`VOLUME_ROOT`, the
one ``conf/databricks*.yaml`` use (the DBFS FileStore is restricted there, and a relative
path would land on the driver's local disk); elsewhere ``out/`` under the working directory.

Examples
--------
>>> nb = Notebook(globals())                      # doctest: +SKIP
>>> k = int(nb.widget("k", "8", "clusters"))      # doctest: +SKIP
>>> out = nb.widget("output_dir", nb.default_dir("01"), "output directory")  # doctest: +SKIP
"""
from __future__ import annotations

import base64
import logging
import os
import posixpath
import sys
from typing import Any, Mapping, Optional

from ..paths import read_file
from .config.files import RedactingFormatter

logger = logging.getLogger(__name__)

#: the name of the handler :func:`show_progress` adds (once) to the package's logger
PROGRESS_HANDLER = "mbkm-notebook-progress"

#: the Unity Catalog volume the notebooks write under on Databricks (as conf/databricks*.yaml)
VOLUME_ROOT = "/Volumes/main/default/minibatch_kmeans"
#: the same off Databricks: relative to the working directory
LOCAL_ROOT = "out"


def on_databricks() -> bool:
    """True on a Databricks cluster or serverless compute (``DATABRICKS_RUNTIME_VERSION``
    set): the rule that ``lifecycle.registry.default_tracking_uri`` follows too."""
    return bool(os.environ.get("DATABRICKS_RUNTIME_VERSION"))


def show_progress(level: str = "INFO") -> logging.Handler:
    """Print the package's log lines at ``level`` and above to the cell's output (stdout):
    a notebook's logging shows only warnings, so a fit would otherwise print nothing while
    it runs. Added once; returns the handler (remove it from
    ``logging.getLogger("minibatch_kmeans")`` to stop)."""
    log = logging.getLogger("minibatch_kmeans")
    for handler in log.handlers:
        if handler.get_name() == PROGRESS_HANDLER:
            return handler
    handler = logging.StreamHandler(sys.stdout)
    handler.set_name(PROGRESS_HANDLER)
    handler.setLevel(level)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > handler.level:
        log.setLevel(handler.level)
    return handler


class Notebook:
    """The notebook's environment, read from its globals (which are not modified)."""

    def __init__(self, namespace: Mapping[str, Any], app_name: str = "minibatch-kmeans",
                 progress: bool = True):
        self.ns = namespace
        self.app_name = app_name
        self.dbutils = namespace.get("dbutils")
        if progress:  # the fit's progress in the cell's output (show_progress)
            show_progress()

    @property
    def on_databricks(self) -> bool:
        """Running on Databricks (:func:`on_databricks`); widgets need ``dbutils`` besides."""
        return on_databricks()

    def default(self, local: str, databricks: str) -> str:
        """A widget's default by environment: ``databricks`` on Databricks, else ``local``.
        The one place that rule lives; :meth:`default_dir` builds on it."""
        return databricks if self.on_databricks else local

    def default_dir(self, *parts: str) -> str:
        """The default output directory of a notebook: ``<root>/notebooks/<parts...>``, on
        the Unity Catalog volume :data:`VOLUME_ROOT` on Databricks, else under
        :data:`LOCAL_ROOT` (``out/notebooks/01`` for ``default_dir("01")``)."""
        return posixpath.join(self.default(LOCAL_ROOT, VOLUME_ROOT), "notebooks", *parts)

    def spark(self):
        """The notebook's ``spark``, or a local session (:func:`get_spark`)."""
        if self.ns.get("spark") is not None:
            return self.ns["spark"]
        from ..spark.session import get_spark

        return get_spark(self.app_name)

    def widget(self, name: str, default: str, label: Optional[str] = None) -> str:
        """A text widget's value; without dbutils, ``MBKM_<NAME>`` or the default."""
        if self.dbutils is None:
            return os.environ.get(f"MBKM_{name.upper()}", default)
        self.dbutils.widgets.text(name, default, label or name)
        return self.dbutils.widgets.get(name)

    def show(self, value: Any, title: Optional[str] = None) -> None:
        """A table (Spark or pandas DataFrame) or text: ``display`` on Databricks, else
        printed."""
        display = self.ns.get("display")
        if title:
            print(f"\n## {title}")
        if display is not None and not isinstance(value, str):
            display(value)
        elif hasattr(value, "toPandas"):
            print(value.limit(50).toPandas().to_string(index=False))
        elif hasattr(value, "to_string"):
            print(value.to_string(index=False) if hasattr(value, "columns") else value)
        else:
            print(value)

    def show_png(self, path: str) -> None:
        """A PNG file: inline through ``displayHTML`` on Databricks, else its path."""
        html = self.ns.get("displayHTML")
        if html is None:
            print(f"picture: {path}")
            return
        data = base64.b64encode(read_file(path)).decode("ascii")
        html(f'<img src="data:image/png;base64,{data}" style="max-width:100%"/>')

