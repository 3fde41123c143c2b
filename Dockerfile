# The production image of Recording Vault (docker-compose.yml; docs/operations.md).
#
# Every third-party distribution comes from requirements.lock, pinned and checked against its
# SHA-256 hash, as a wheel (nothing is compiled); the project itself is then built from this
# source with the locked setuptools, without fetching anything.

FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes --no-deps --only-binary :all: -r /tmp/requirements.lock

WORKDIR /src
COPY pyproject.toml README.md babel.cfg ./
COPY storage_backends ./storage_backends
COPY vault ./vault
# The compiled catalogues are package data, so they are built before the project is installed.
RUN pybabel compile -d vault/translations \
 && pip install --no-deps --no-build-isolation --no-index .


FROM python:3.11-slim-bookworm

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VAULT_INSTANCE_DIR=/var/lib/recvault \
    VAULT_KEYS_DIR=/var/lib/recvault/keys

# A fixed, unprivileged user. The keys directory exists in the image with mode 0700, so a
# named volume mounted there starts out owned by this user with the same mode.
RUN groupadd --system --gid 10001 recvault \
 && useradd --system --uid 10001 --gid recvault --home-dir /var/lib/recvault \
        --no-create-home --shell /usr/sbin/nologin recvault \
 && install -d -m 0700 -o recvault -g recvault /var/lib/recvault /var/lib/recvault/keys

COPY --from=build /opt/venv /opt/venv
COPY deploy/init.sh deploy/scheduler.sh deploy/run_sql.py /app/deploy/
COPY deploy/postgres/runtime-grants.sql /app/deploy/postgres/

USER 10001:10001
WORKDIR /var/lib/recvault
EXPOSE 5000
CMD ["recvault", "serve", "--host", "0.0.0.0", "--port", "5000"]
