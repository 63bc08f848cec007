#!/usr/bin/env bash
# Entrypoint of the NPU worker image: the CANN environment exactly as the host's set_env.sh makes it,
# a device check, then the official Airflow entrypoint with the given command.
set -eo pipefail

# The mounted toolkit's own script knows its version's paths better than the image's static ENV does.
# CANN 8.5 and later moved it from ascend-toolkit/ to cann/.
for env_script in "${ASCEND_TOOLKIT_HOME:-/usr/local/Ascend/ascend-toolkit/latest}/../set_env.sh" \
                  /usr/local/Ascend/ascend-toolkit/set_env.sh \
                  /usr/local/Ascend/cann/set_env.sh; do
  if [[ -f "${env_script}" ]]; then
    # shellcheck disable=SC1090
    source "${env_script}"
    echo "npu-entrypoint: CANN environment from ${env_script}"
    break
  fi
done

# A worker that cannot open a device would still take tasks from its npu-<chip> queues and fail every one of
# them; refusing to start makes the mistake visible where it was made (the compose devices list).
if [[ "${ERFNET_NPU_SKIP_DEVICE_CHECK:-0}" != "1" ]]; then
  shopt -s nullglob
  devices=(/dev/davinci[0-9]*)
  if [[ ${#devices[@]} -eq 0 || ! -e /dev/davinci_manager ]]; then
    echo "npu-entrypoint: no /dev/davinciN or /dev/davinci_manager in the container;" \
         "map the Ascend devices (docs/deployment.md) or set ERFNET_NPU_SKIP_DEVICE_CHECK=1" >&2
    exit 1
  fi
  echo "npu-entrypoint: devices ${devices[*]}"
  if command -v npu-smi >/dev/null 2>&1; then
    npu-smi info || echo "npu-entrypoint: npu-smi info failed (driver mounts?)" >&2
  fi
fi

exec /entrypoint "$@"
