# One image for the API and the workers; compose.yaml chooses the command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY core core
COPY producer producer
COPY consumer consumer
COPY schemas schemas
COPY scripts scripts
RUN pip install --no-cache-dir .
RUN useradd --create-home --uid 10001 app && mkdir -p /data && chown app /data
USER app
ENV STORAGE_DIR=/data/blobs
EXPOSE 8000
CMD ["image-api", "--host", "0.0.0.0", "--port", "8000"]
