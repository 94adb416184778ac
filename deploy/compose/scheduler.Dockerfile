# The plain-compose topology's scheduler: the light `query` function image (Python, httpx, croniter,
# PyYAML, shared/ at /home/app, non-root) plus local_dev/ and the stack file it reads the schedules
# from. Built from the repository root by `docker-compose build scheduler`.
ARG BASE_IMAGE=ghcr.io/powersense/query:0.1.0
FROM ${BASE_IMAGE}

WORKDIR /home/app
COPY local_dev/ local_dev/
COPY openfaas-stack.yml ./
COPY deploy/compose/functions.env.yml deploy/compose/functions.env.yml

ENV POWERSENSE_TOPOLOGY=compose
USER 10001:10001
# No watchdog here: the scheduler is a plain process (SIGTERM stops it after the calls in flight).
HEALTHCHECK NONE
CMD ["python", "-m", "local_dev", "scheduler"]
