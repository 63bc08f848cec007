# syntax=docker/dockerfile:1
# The ErfNet regression pipeline on the official Airflow image. Two build targets:
#   cpu  api-server, scheduler, dag-processor, triggerer, init and the CPU Celery worker
#   npu  the Celery worker of queue `npu` on an Ascend host: cpu + ais_bench + the CANN environment
# docs/deployment.md explains both.

# Python 3.11: the project's requires-python, and a Python that CANN 8 toolkits support.
FROM apache/airflow:3.3.2-python3.11 AS cpu

WORKDIR /opt/erfnet/src

# The same pinned set as `make install`. constraints.txt pins apache-airflow==3.3.2 (the base image's,
# repeated so pip can never swap it) and torch==2.13.0+cpu, a local version that only PyTorch's CPU
# wheel index serves - hence the extra index. The notification providers (pyproject's `airflow` extra)
# are named here: the base image has SMTP but not Apprise.
COPY --chown=airflow:root constraints.txt pyproject.toml README.md ./
COPY --chown=airflow:root erfnet_tasks ./erfnet_tasks
RUN pip install --no-cache-dir \
      --extra-index-url https://download.pytorch.org/whl/cpu \
      --constraint constraints.txt \
      "apache-airflow==3.3.2" \
      apache-airflow-providers-smtp apache-airflow-providers-apprise \
      .

COPY --chown=airflow:root deploy /opt/erfnet/deploy

ENV ERFNET_DATA_DIR=/opt/erfnet/data \
    ERFNET_DATA_ROOTS=/opt/erfnet/data
WORKDIR /opt/airflow


FROM cpu AS npu

# CANN is not installed in the image: the host's /usr/local/Ascend (driver and toolkit) is mounted
# read-only, so a CANN upgrade on the host is all a CANN upgrade takes. These are the variables the
# toolkit's set_env.sh exports; deploy/npu-entrypoint.sh also sources set_env.sh when it is mounted,
# which adds the architecture-specific paths and whatever a newer CANN adds.
ENV ASCEND_HOME=/usr/local/Ascend \
    ASCEND_TOOLKIT_HOME=/usr/local/Ascend/ascend-toolkit/latest \
    ASCEND_HOME_PATH=/usr/local/Ascend/ascend-toolkit/latest \
    ASCEND_AICPU_PATH=/usr/local/Ascend/ascend-toolkit/latest \
    ASCEND_OPP_PATH=/usr/local/Ascend/ascend-toolkit/latest/opp \
    TOOLCHAIN_HOME=/usr/local/Ascend/ascend-toolkit/latest/toolkit \
    LD_LIBRARY_PATH=/usr/local/Ascend/driver/lib64:/usr/local/Ascend/driver/lib64/common:/usr/local/Ascend/driver/lib64/driver:/usr/local/Ascend/ascend-toolkit/latest/lib64:/usr/local/Ascend/ascend-toolkit/latest/lib64/plugin/opskernel:/usr/local/Ascend/ascend-toolkit/latest/lib64/plugin/nnengine:/usr/local/Ascend/ascend-toolkit/latest/tools/aml/lib64:/usr/local/Ascend/ascend-toolkit/latest/tools/aml/lib64/plugin:/usr/local/dcmi \
    PYTHONPATH=/usr/local/Ascend/ascend-toolkit/latest/python/site-packages:/usr/local/Ascend/ascend-toolkit/latest/opp/built-in/op_impl/ai_core/tbe \
    PATH=/usr/local/Ascend/ascend-toolkit/latest/bin:/usr/local/Ascend/ascend-toolkit/latest/compiler/ccec_compiler/bin:/usr/local/Ascend/ascend-toolkit/latest/tools/ccec_compiler/bin:${PATH}

# atc's and AOE's Python dependencies from CANN's install guide that the project does not already pin
# (attrs, cffi, psutil, sympy, PyYAML, protobuf, requests are in constraints.txt).
RUN pip install --no-cache-dir --constraint /opt/erfnet/src/constraints.txt \
      decorator==5.2.1 scipy==1.16.1 absl-py==2.3.1

# ais_bench is not on PyPI (PyPI's "ais-bench-benchmark" is an unrelated tool): build the aclruntime and
# ais_bench wheels from Huawei's ais-bench tool and put them into deploy/ascend/wheels/ first. Without
# them the build stops here rather than produce a worker that cannot infer.
COPY --chown=airflow:root deploy/ascend/wheels /tmp/ascend-wheels
RUN set -eu; \
    ls /tmp/ascend-wheels/aclruntime-*.whl /tmp/ascend-wheels/ais_bench-*.whl >/dev/null \
      || { echo "deploy/ascend/wheels/ needs aclruntime-*.whl and ais_bench-*.whl (docs/deployment.md)" >&2; exit 1; }; \
    pip install --no-cache-dir --constraint /opt/erfnet/src/constraints.txt /tmp/ascend-wheels/*.whl

ENTRYPOINT ["/usr/bin/dumb-init", "--", "/opt/erfnet/deploy/npu-entrypoint.sh"]
CMD ["bash", "-c", "queues=$(erfnet worker-queues) && exec airflow celery worker --queues \"$queues\""]
