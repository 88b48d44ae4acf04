# The Ledgerwire daemon. Configuration at /etc/ledgerwire/ledgerwire.yml; the credential encryption key
# comes from a secret file (LEDGERWIRE_SECRET_KEY_FILE / secret_key_file) or $LEDGERWIRE_SECRET_KEY —
# never from the command line.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/ledgerwire
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY connectors ./connectors
COPY schemas ./schemas
RUN pip install --no-cache-dir -e . && useradd --system --uid 10001 --home /nonexistent ledgerwire
USER ledgerwire
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status == 200 else 1)"
ENTRYPOINT ["ledgerwire"]
CMD ["run", "--config", "/etc/ledgerwire/ledgerwire.yml"]
