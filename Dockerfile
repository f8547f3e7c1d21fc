# healthsync: the scheduled connector as a container.
#
#   docker build -t healthsync .
#   docker run --env-file healthsync.env -v healthsync-state:/var/lib/healthsync healthsync
#
# The default command is the scheduled loop (HEALTHSYNC_CRON, hourly); pass
# `run` for one run under an external scheduler (Kubernetes CronJob, ECS).
# State (the SQLite store) lives on the volume /var/lib/healthsync; the
# mappings ship in /etc/healthsync/mappings (mount your own over it).
# No Docker engine runs in CI: scripts/check-container-install replays the
# build stage's COPY and RUN steps in a clean virtual environment instead, so
# keep each step on the lines below in that simple form.
# The runtime only: connector/ without the API sandbox (sandbox/ and the
# `sandbox` extra, trustme) and without the test tools; the check asserts it.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY connector/ connector/
RUN python -m venv /opt/healthsync \
 && /opt/healthsync/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/healthsync/bin/pip install --no-cache-dir /src

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/healthsync --create-home healthsync
COPY --from=build /opt/healthsync /opt/healthsync
COPY mappings/ /etc/healthsync/mappings/
ENV PATH=/opt/healthsync/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HEALTHSYNC_DB=/var/lib/healthsync/healthsync.db \
    HEALTHSYNC_MAPPINGS=/etc/healthsync/mappings \
    HEALTHSYNC_CRON="0 * * * *" \
    HEALTHSYNC_LOG_FORMAT=json
VOLUME /var/lib/healthsync
WORKDIR /var/lib/healthsync
USER 10001:10001
ENTRYPOINT ["healthsync"]
CMD ["schedule"]
