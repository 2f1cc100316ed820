# The exporter image: `docker build -t kpi-exporter .`
# Runs `kpi-exporter demo` (the README's command) unless given another command,
# e.g. `serve --config /etc/kpi-exporter/kpi-exporter.yml`.

FROM python:3.11.10-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# Wheels of the project and its dependencies (all pure Python), so the final
# stage needs no build tools and no network.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11.10-slim-bookworm
COPY --from=build /wheels /wheels
# promtool (a static binary) for `kpi-exporter backfill --blocks`.
COPY --from=prom/prometheus:v2.53.3 /bin/promtool /usr/local/bin/promtool
# /prometheus belongs to Prometheus' user (nobody, 65534), so that the compose
# stack's data volume, first mounted by the backfill, is Prometheus' own.
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin kpi \
    && mkdir /prometheus && chown 65534:65534 /prometheus
USER 10001
# Listen on every interface inside the container; compose publishes on localhost.
ENV KPI_EXPORTER_DEMO_LISTEN=0.0.0.0:19877 \
    KPI_EXPORTER_SERVE_LISTEN=0.0.0.0:19877 \
    PYTHONUNBUFFERED=1
EXPOSE 19877
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:19877/healthz', timeout=2)"]
ENTRYPOINT ["kpi-exporter"]
CMD ["demo"]
