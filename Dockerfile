# aocu node OUTSIDE a confidential VM: a simulated TEE (--tee sim, every response says so) or none (--tee none).
# Inside an SEV-SNP / TDX guest use the measured VM image instead (images/build.sh); a container's evidence
# would not cover the container. Build:  docker build -t aocu .
# Run:    docker run -d -p 6363:6363 -v aocu-data:/data aocu             (simulated TEE)
#         docker run -d -p 6363:6363 -v aocu-data:/data aocu serve --tee none --bind 0.0.0.0:6363 --data-dir /data

# -- build: the wheel with the native core (C++17 pybind11 extension) -----------------------------------------------
FROM debian:12-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential python3-venv python3-dev libssl-dev libsodium-dev libzstd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY native ./native
COPY cu ./cu
COPY attestation ./attestation
# pyproject.toml's build requirements, then the wheels of aocu and of every dependency (pinned by pip's resolver)
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir "setuptools>=68" wheel "pybind11==3.1.0" \
 && /opt/build/bin/pip wheel --no-cache-dir --no-build-isolation -w /wheels .

# -- runtime: Debian 12, the venv, a non-root user, state on the /data volume ----------------------------------------
FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv libssl3 libsodium23 libzstd1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 6363 --home-dir /data --shell /usr/sbin/nologin aocu \
 && mkdir -p /data && chown aocu:aocu /data
COPY --from=build /wheels /wheels
RUN python3 -m venv /opt/aocu \
 && /opt/aocu/bin/pip install --no-cache-dir --no-index --find-links /wheels aocu \
 && rm -rf /wheels
ENV PATH=/opt/aocu/bin:$PATH PYTHONUNBUFFERED=1
USER aocu
WORKDIR /data
VOLUME /data
EXPOSE 6363
# liveness: GET /health answers 200 (python: the image has no curl)
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:6363/health', timeout=4).status != 200)"]
ENTRYPOINT ["aocu"]
CMD ["serve", "--tee", "sim", "--bind", "0.0.0.0:6363", "--data-dir", "/data"]
