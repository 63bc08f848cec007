#!/usr/bin/env bash
# Run by the postgres image once, when its data volume is empty (/docker-entrypoint-initdb.d):
# the results database beside Airflow's metadata, owned by its own role. For a volume that already
# existed, airflow-init does the same through deploy/ensure_results_database.py.
set -euo pipefail

# psql variables (:'x' literal, :"x" identifier) keep the names and the password out of the SQL text.
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname "${POSTGRES_DB}" \
     -v results_db="${ERFNET_RESULTS_DB:-erfnet_results}" \
     -v results_user="${ERFNET_RESULTS_USER:-erfnet}" \
     -v results_password="${ERFNET_RESULTS_PASSWORD:?ERFNET_RESULTS_PASSWORD is not set}" <<'EOSQL'
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'results_user') AS need_role \gset
\if :need_role
  CREATE ROLE :"results_user" LOGIN PASSWORD :'results_password';
\endif
CREATE DATABASE :"results_db" OWNER :"results_user";
EOSQL
echo "created database ${ERFNET_RESULTS_DB:-erfnet_results} owned by ${ERFNET_RESULTS_USER:-erfnet}"
