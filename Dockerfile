# syntax=docker/dockerfile:1
#
# One image for every Adgang process; the command picks the part:
#   docker run adgang api identity        docker run adgang worker notifier
#   docker run adgang migrate             docker run adgang topics --bootstrap kafka:9092
# Configuration comes from ADGANG_* environment variables at run time (docs/configuration.md);
# nothing secret is baked into the image.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/adgang
WORKDIR /src
COPY pyproject.toml ./
COPY shared/ shared/
COPY services/ services/
RUN /opt/adgang/bin/pip install .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="adgang" \
      org.opencontainers.image.description="Adgang: self-service access for business customers"
ENV PATH=/opt/adgang/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# /var/lib/adgang is the working directory and var_dir (ready markers; faust writes its data
# directory into the working directory). /var/spool/adgang/eboks is the notifier's e-Boks
# spool; an empty named volume mounted there takes over this ownership.
RUN groupadd --system --gid 10001 adgang \
    && useradd --system --uid 10001 --gid adgang --no-create-home \
        --home-dir /var/lib/adgang --shell /usr/sbin/nologin adgang \
    && install -d -o adgang -g adgang -m 0750 /var/lib/adgang \
    && install -d -m 0755 /var/spool/adgang \
    && install -d -o adgang -g adgang -m 0750 /var/spool/adgang/eboks
COPY --from=build /opt/adgang /opt/adgang
WORKDIR /var/lib/adgang
# Numeric, so that an orchestrator can verify the image does not run as root.
USER 10001:10001
EXPOSE 8001 8002 8003 8004
ENTRYPOINT ["adgang"]
CMD ["--help"]
