# One image for the API, the workers and image-replay; compose.yaml chooses the command. The local Kafka
# launcher (scripts/kafka) and the benchmarks (scripts/bench) are development tools and stay out of it.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md constraints.txt ./
COPY core core
COPY producer producer
COPY consumer consumer
COPY schemas schemas
COPY scripts/__init__.py scripts/arguments.py scripts/
COPY scripts/replay scripts/replay
RUN pip install --no-cache-dir --constraint constraints.txt .
RUN useradd --create-home --uid 10001 app && mkdir -p /data && chown app /data
USER app
ENV STORAGE_DIR=/data/blobs
EXPOSE 8000
CMD ["image-api", "--host", "0.0.0.0", "--port", "8000"]
