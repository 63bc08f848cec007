"""ErfNet offline-inference regression pipeline: the library.

Every step of the guide lives here as a plain function; the Airflow DAG and the UI plugin only wire
and present these. Nothing in this package imports Airflow.
"""

__version__ = "0.1.0"
