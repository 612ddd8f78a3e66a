# One image for every process of the platform; each Deployment picks its process with its command
# (`python -m services.gateway`, `python -m services.renders.worker`, `python -m shared.devstack migrate` ...).
#   docker build -t <registry>/plugin-platform:<version> .
# Pin the base by digest in your registry mirror if you need bit-for-bit rebuilds (python:3.11.14-slim-bookworm@sha256:...).

# --- build: compilers only here, never in the final image ---------------------------------------------------------
FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
    && apt-get install --yes --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
# A regular (non-editable) install of the project and its runtime dependencies only: no [dev] extras.
RUN pip install --upgrade pip setuptools wheel \
    && pip install . \
    && python -m compileall -q /opt/venv/lib/python3.11/site-packages

# --- runtime --------------------------------------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app

COPY --from=build /opt/venv /opt/venv

# Nothing is written under the working directory: the manifests set every path setting under /tmp (an emptyDir),
# and the root filesystem is read-only in the cluster.
WORKDIR /app
USER 10001:10001

EXPOSE 8080
CMD ["python", "-m", "services.gateway"]
