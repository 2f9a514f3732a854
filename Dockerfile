# mapreduce: one image for the master, the workers and job submission.
#   docker build -t mapreduce .
#   docker compose up -d --scale worker=4      (see docker-compose.yml and the README)
FROM python:3.11-slim

WORKDIR /opt/mapreduce
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && useradd --create-home --uid 1000 mapreduce
USER mapreduce
WORKDIR /data
ENTRYPOINT ["mapreduce"]
CMD ["--help"]
