# The cxstream application image (used by docker-compose.yml and deploy/k8s).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cxstream ./cxstream
COPY config ./config
# Installed as root, run as an unprivileged user (uid/gid 10001, the one deploy/k8s names).
# What the commands write: /data (the simulator's profiles and truth, a volume in
# docker-compose.yml) and /var/lib/cxstream (the flow's recovery_dir in deploy/k8s), both
# owned by that user, so a volume mounted there starts writable.
RUN pip install --no-cache-dir . \
    && groupadd --system --gid 10001 cxstream \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin cxstream \
    && mkdir -p /data /var/lib/cxstream/recovery \
    && chown -R 10001:10001 /data /var/lib/cxstream
USER 10001:10001
EXPOSE 3030 8080
ENTRYPOINT ["cxstream"]
CMD ["run", "--config", "/app/config/cxstream.yaml"]
