"""minibatch-kmeans: mini-batch k-means clustering as a distributed Spark job."""
from setuptools import find_packages, setup

JOBS = ["generate_data", "train", "score", "compare", "tune", "monitor", "stream"]

setup(
    name="minibatch-kmeans",
    version="0.1.0",
    description="Mini-batch k-means (Sculley 2010) for Spark DataFrames, as a pyspark.ml estimator",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    license="Apache-2.0",
    license_files=["LICENSE"],
    classifiers=[
        "Development Status :: 4 - Beta",
        "Intended Audience :: Developers",
        "Intended Audience :: Science/Research",
        "Operating System :: OS Independent",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Information Analysis",
        "Typing :: Typed",
    ],
    # The import name is minibatch_kmeans (never "lib"). The thin spark-submit entry
    # points in jobs/ also ship in the wheel, as minibatch_kmeans_jobs, so that
    # console scripts and Databricks wheel tasks call the very same main().
    package_dir={"": "lib", "minibatch_kmeans_jobs": "jobs"},
    packages=find_packages("lib") + ["minibatch_kmeans_jobs"],
    package_data={"minibatch_kmeans": ["py.typed"]},
    install_requires=[
        "numpy>=1.26,<3",
        "pandas>=2.2,<3",  # pyspark 4.2 does not fully support pandas 3 yet
        "pyarrow>=18",
        "pyyaml>=6",
        "matplotlib>=3.8",
    ],
    extras_require={
        # pyspark itself: a cluster, Databricks or a notebook brings its own Spark, which
        # installing this package must not replace; install the extra where there is none
        # (4.1: arrow_udf, which scoring uses)
        "spark": ["pyspark[connect]>=4.1,<5"],
        # jobs/compare.py and minibatch_kmeans.evaluate.compare: Hungarian matching, ARI/NMI and
        # the single-machine references
        "compare": ["scipy>=1.11", "scikit-learn>=1.5"],
        # compiled row passes of the assignment kernel (core/numba_passes.py); without numba the
        # NumPy path runs. 0.62 is the first numba that accepts NumPy 2.3.
        "fast": ["numba>=0.62"],
        # Delta tables: delta-spark, the Python side of Spark's own Delta source (its jars
        # come from spark-submit --packages or `make jars`; the default when the session has
        # Delta), and delta-rs for sessions without it: it resolves the log, Spark reads and
        # writes the data files (minibatch_kmeans.tables.delta)
        "delta": ["delta-spark==4.4.0", "deltalake>=1.2"],
        # model registry and tracking (minibatch_kmeans.lifecycle.registry, jobs/monitor.py and
        # jobs/tune.py): MLflow, local SQLite by default, the workspace's on Databricks
        "mlops": ["mlflow>=3.1"],
        # numba too, so that the tests compare the compiled path with the NumPy one
        "dev": ["pytest>=8", "scikit-learn>=1.5", "scipy>=1.11", "numba>=0.62",
                "deltalake>=1.2"],
    },
    entry_points={
        # each exits through sys.exit with the job's code (jobs/entry_points.py)
        "console_scripts": [f"mbkm-{j.replace('_', '-')}=minibatch_kmeans_jobs.entry_points:{j}"
                            for j in JOBS],
    },
)
