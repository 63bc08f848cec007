"""Write the admin's password from .env into SimpleAuthManager's passwords file; run by airflow-init.

Airflow's SimpleAuthManager reads {"user": "password"} from [core] simple_auth_manager_passwords_file
and invents a random password for any configured user missing from it. Setting ours here makes the
login the one documented in .env; other users' entries are kept.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def set_password(path: Path, username: str, password: str) -> None:
    passwords = json.loads(path.read_text() or "{}") if path.exists() else {}
    passwords[username] = password
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(passwords) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


def main() -> int:
    path = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    username = os.environ.get("_AIRFLOW_WWW_USER_USERNAME")
    password = os.environ.get("_AIRFLOW_WWW_USER_PASSWORD")
    if not (path and username and password):
        print(
            "simple_auth_passwords: AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE, "
            "_AIRFLOW_WWW_USER_USERNAME and _AIRFLOW_WWW_USER_PASSWORD must be set",
            file=sys.stderr,
        )
        return 2
    set_password(Path(path), username, password)
    print(f"simple_auth_passwords: password of {username!r} set in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
