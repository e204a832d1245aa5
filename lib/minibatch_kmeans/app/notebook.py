"""What the Databricks notebooks in ``notebooks/`` share: widgets that fall back to their
defaults without ``dbutils``, the session, and showing tables and pictures.

A notebook passes its own globals, where Databricks puts ``spark``, ``dbutils``,
``display`` and ``displayHTML``; run as a plain script (``python notebooks/01_...py``) none
of them exists, and these helpers fall back to a local session, the widget defaults (or
``MBKM_<NAME>`` environment variables, which is how tests make the data small) and
printing.

Examples
--------
>>> nb = Notebook(globals())                      # doctest: +SKIP
>>> k = int(nb.widget("k", "8", "clusters"))      # doctest: +SKIP
"""
from __future__ import annotations

import base64
import logging
import os
from typing import Any, Mapping, Optional

logger = logging.getLogger(__name__)


class Notebook:
    """The notebook's environment, read from its globals (which are not modified)."""

    def __init__(self, namespace: Mapping[str, Any], app_name: str = "minibatch-kmeans"):
        self.ns = namespace
        self.app_name = app_name
        self.dbutils = namespace.get("dbutils")

    @property
    def on_databricks(self) -> bool:
        return self.dbutils is not None

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
        with open(path, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        html(f'<img src="data:image/png;base64,{data}" style="max-width:100%"/>')

