# The Ledgerwire daemon. Configuration at /etc/ledgerwire/ledgerwire.yml; the credential encryption key is a
# 0600 file in the volume at /var/lib/ledgerwire/secrets, written by this image's own uid:
#   docker compose run --rm --no-deps ledgerwire secret-key --out /var/lib/ledgerwire/secrets/secret.key
# (or $LEDGERWIRE_SECRET_KEY) — never on the command line.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/ledgerwire
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY connectors ./connectors
COPY schemas ./schemas
# The secrets directory is created owned by the service's uid, so a fresh named volume mounted there
# inherits that owner and a key written 0600 inside it is readable by the daemon (same uid) and no one else.
RUN pip install --no-cache-dir -e . && useradd --system --uid 10001 --home /nonexistent ledgerwire \
    && install -d -o ledgerwire -g ledgerwire -m 0700 /var/lib/ledgerwire/secrets
USER ledgerwire
# 9464: /metrics, /healthz, /readyz; 9465: the QuickBooks Web Connector endpoint (its own listener)
EXPOSE 9464 9465
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status == 200 else 1)"
ENTRYPOINT ["ledgerwire"]
CMD ["run", "--config", "/etc/ledgerwire/ledgerwire.yml"]
