# The cxstream application image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cxstream ./cxstream
COPY config ./config
RUN pip install --no-cache-dir .
EXPOSE 3030
ENTRYPOINT ["cxstream"]
CMD ["run", "--config", "/app/config/cxstream.yaml"]
