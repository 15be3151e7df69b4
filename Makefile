# l5d-py: `make run` and `make test` work on a fresh machine with Python 3.11 and make.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# The compiled hot modules (router/_native.py: COMPILED; each .py has a .pxd beside it, but
# for the classifiers, compiled as they are): rebuilt in place whenever a source or
# declaration changed, so make never runs a stale one.
NATIVE_PXD := $(wildcard router/*.pxd router/*/*.pxd)
NATIVE_SRC := $(NATIVE_PXD) $(NATIVE_PXD:.pxd=.py) router/policy/classifiers.py setup.py \
              router/_native.py
BUILT  := $(VENV)/.built-stamp
# The data-path tests, run a second time on the pure-Python reference (L5D_PURE_PYTHON=1).
PURE_TESTS := tests/test_http_*.py tests/test_policy*.py tests/test_e2e_router.py \
              tests/test_native.py
CONFIG ?= configs/local.yaml

# Debian packages the tests and the benchmark drive for real.
APT_PACKAGES := nginx-light wrk chromium prometheus curl openssl nghttp2-client
APT_BINARIES := nginx wrk chromium prometheus promtool curl openssl h2load

.PHONY: run run-tls test bench bench-k8s soak lint system-deps venv build clean proto

venv: $(BUILT)

build: $(BUILT)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

$(BUILT): $(STAMP) $(NATIVE_SRC)
	$(PY) setup.py -q build_ext --inplace -j 2
	touch $@

system-deps:
	@missing=""; for b in $(APT_BINARIES); do \
	  PATH="$$PATH:/usr/sbin" command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages (missing:$$missing)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

run: $(BUILT)
	$(PY) -m router.demo.run $(CONFIG)

# The TLS mesh locally: outgoing :4140 -> TLS -> incoming :4141 (configs/mesh-tls-local.yaml).
run-tls: $(BUILT)
	$(PY) -m router.tls.demo_certs .run/tls
	$(PY) -m router.demo.run configs/mesh-tls-local.yaml

test: $(BUILT) system-deps
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q
	L5D_PURE_PYTHON=1 $(PY) -m pytest -q $(PURE_TESTS)

bench: $(BUILT) system-deps
	$(PY) bench/run.py $(if $(WORKERS),--workers $(WORKERS))
	$(PY) bench/h2_bench.py

# io.l5d.k8s at cluster scale (issue 15): a real router against the fake API server.
bench-k8s: $(BUILT)
	flock /tmp/l5d-bench.lock $(PY) bench/k8s_scale.py

# Longer hostile-input runs than `make test` affords: the malformed-HTTP corpus 20 times.
soak: $(BUILT) system-deps
	L5D_CORPUS_ROUNDS=20 $(PY) -m pytest -q -s tests/test_http_corpus.py
	HYPOTHESIS_PROFILE=soak $(PY) -m pytest -q tests/test_fuzz_dtab.py tests/test_dtab_roundtrip.py
	flock /tmp/l5d-bench.lock $(PY) bench/floods.py

# Regenerate mesh_proto/*_pb2*.py from Linkerd's .proto files (committed; a test checks them).
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. mesh_proto/*.proto

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache build
	find router -name '*.so' -delete -o -name '*.c' -delete
	rm -f router/_native_build.json
