#!/usr/bin/env bash
# What the airflow-init service runs once before the other Airflow services start (as root, through
# the official /entrypoint, which first waits for the metadata database). Every step is idempotent:
# running it again after changing .env updates the pool size, the password and the schemas.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ -z "${AIRFLOW_UID:-}" ]]; then
  echo "WARNING: AIRFLOW_UID is not set; files in the mounted folders will be owned by root." \
       "Put AIRFLOW_UID=\$(id -u) into .env (docs/deployment.md)." >&2
  AIRFLOW_UID=50000
fi
for name in AIRFLOW_JWT_SECRET _AIRFLOW_WWW_USER_PASSWORD ERFNET_RESULTS_PASSWORD POSTGRES_PASSWORD; do
  if [[ "${!name:-}" == change-me* ]]; then
    echo "WARNING: ${name} still has the placeholder value of .env.example; set your own." >&2
  fi
done

echo "== folders"
mkdir -v -p /opt/airflow/{logs,dags,plugins,config} "${ERFNET_DATA_DIR:-/opt/erfnet/data}"

echo "== Airflow $(airflow version)"
# Writes the default airflow.cfg into the config folder when it is missing, as upstream does.
airflow config list >/dev/null

echo "== metadata database"
airflow db migrate

echo "== login"
python "${here}/simple_auth_passwords.py"

echo "== pool npu_devices"
# One slot per NPU: inference and AOE hold a slot so that no two measurements share a device.
airflow pools set npu_devices "${ERFNET_NPU_SLOTS:-1}" \
  "Ascend NPUs of the fleet (all npu-<chip> workers); inference and AOE hold one slot each"

echo "== results database"
python "${here}/ensure_results_database.py"
# The connection comes from AIRFLOW_CONN_ERFNET_RESULTS (docker-compose.yaml); show that it resolves.
airflow connections get erfnet_results --output json >/dev/null
echo "connection erfnet_results: resolves"
erfnet results init

echo "== ownership"
chown -R "${AIRFLOW_UID}:0" /opt/airflow/{logs,dags,plugins,config}
# Not recursive: the datasets and weights an operator put there stay theirs; the workers only need
# to create their folders beside them.
chown "${AIRFLOW_UID}:0" "${ERFNET_DATA_DIR:-/opt/erfnet/data}"
echo "airflow-init: done"
