# The worker image: one image for the migration step, the worker, beat and Flower
# (docker-compose.yml picks the command). No secrets are baked in: every setting comes
# from the environment at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, in their own layer: the runtime requirements of pyproject.toml at the
# versions pinned in requirements.lock (the lock also pins the test tools, which the image
# does not need).
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/runtime-requirements.txt \
    && pip install --constraint requirements.lock -r /tmp/runtime-requirements.txt \
    && rm /tmp/runtime-requirements.txt

# Then the package itself (its dependencies are already there).
COPY README.md ./
COPY models ./models
COPY tasks ./tasks
COPY worker ./worker
RUN pip install --no-deps . \
    && rm -rf /app/build

# Never run as root: a task that misbehaves must not own the container.
RUN useradd --create-home --uid 10001 billing \
    && mkdir /data \
    && chown billing:billing /data
USER billing
WORKDIR /home/billing

# The embedded default's folder (used by `billing run` without PostgreSQL and Redis).
ENV BILLING_DATA_DIR=/data
VOLUME ["/data"]

CMD ["billing", "run"]
