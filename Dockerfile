# l5d-py image: `docker build -t l5d-py:0.1.0 .` (k8s/l5d.yml runs this tag).
# Two stages so the runtime image has no compiler or pip cache: the build
# stage installs the package with the pinned versions of constraints.txt into
# a virtualenv, the runtime stage copies only that virtualenv.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# gcc compiles the hot modules (setup.py, Cython); the runtime stage gets only the result.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/l5d
WORKDIR /src
COPY setup.cfg setup.py pyproject.toml constraints.txt README.md ./
COPY dtab ./dtab
COPY namers ./namers
COPY transformers ./transformers
COPY router ./router
COPY configs ./configs
# The image refuses to build if a hot module would run from source (router/_native.py).
RUN /opt/l5d/bin/pip install -c constraints.txt . \
 && /opt/l5d/bin/l5d --help >/dev/null \
 && cd / && /opt/l5d/bin/python -c "import importlib, router._native as n; \
[importlib.import_module(m) for m in n.COMPILED]; \
assert all(s == 'compiled' for s in n.STATUS.values()), n.STATUS"

FROM python:3.11-slim
COPY --from=build /opt/l5d /opt/l5d
COPY --from=build /src/configs /etc/l5d-examples
ENV PATH=/opt/l5d/bin:$PATH PYTHONUNBUFFERED=1
# No root needed: hostPorts are mapped by the kubelet, not bound by us as root.
USER 65534:65534
EXPOSE 4140 4141 4142 9990
ENTRYPOINT ["l5d"]
CMD ["/etc/l5d/config.yaml"]
