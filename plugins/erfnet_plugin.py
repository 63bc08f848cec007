"""The ErfNet results views inside the Airflow UI.

Wiring only: the FastAPI app lives in ``erfnet_ui`` (beside this file, on Airflow's plugin path) and
reads everything through ``erfnet_tasks.results``. Airflow does not authenticate plugin apps, so the
app is built with Airflow's own ``get_user`` dependency, which accepts the UI's ``_token`` cookie as
well as an ``Authorization: Bearer`` token.
"""

from __future__ import annotations

from airflow.api_fastapi.core_api.security import get_user
from airflow.plugins_manager import AirflowPlugin
from erfnet_ui.app import URL_PREFIX, create_app


class ErfnetResultsPlugin(AirflowPlugin):
    name = "erfnet_results"
    # AirflowPlugin declares these two as plain (instance) list attributes: a ClassVar would contradict it (mypy).
    fastapi_apps = [  # noqa: RUF012
        {"app": create_app(require_user=get_user), "url_prefix": URL_PREFIX, "name": "ErfNet results"},
    ]
    # url_route makes the UI show the app in an iframe at /plugin/erfnet, inside its own frame and nav.
    external_views = [  # noqa: RUF012
        {
            "name": "ErfNet results",
            "href": f"{URL_PREFIX}/",
            "url_route": "erfnet",
            "destination": "nav",
        }
    ]
