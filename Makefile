# Two commands matter: `make run` (local stack) and `make test`. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
S3_PORT ?= 4568
RESIZE_PORT ?= 8080
NGINX_PORT ?= 8081
# Our restrictive ImageMagick policy (deploy/policy.xml) replaces the system one.
export MAGICK_CONFIGURE_PATH := $(CURDIR)/deploy

.PHONY: run test bench deps system-deps python-deps node-deps lock clean

run: deps
	S3_PORT=$(S3_PORT) RESIZE_PORT=$(RESIZE_PORT) NGINX_PORT=$(NGINX_PORT) $(PY) -m resize_server.devstack

test: deps
	$(PY) -m pytest $(PYTEST_ARGS)

bench: deps
	$(MAKE) -C bench run

deps: system-deps python-deps node-deps

# System packages: the MagickWand library, redis-server and nginx (tests, local stack), curl,
# systemd-analyze (tests/deploy checks the units in deploy/),
# Node.js and npm (s3rver), and python3-venv (Debian's python3 has no ensurepip without it).
system-deps:
	@missing=""; \
	ldconfig -p | grep -q 'libMagickWand-6.Q16.so' || missing="$$missing magickwand"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	{ command -v nginx || test -x /usr/sbin/nginx; } >/dev/null || missing="$$missing nginx"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v node >/dev/null || missing="$$missing nodejs npm"; \
	command -v node >/dev/null && ! command -v npm >/dev/null && missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "installing system packages for:$$missing"; \
	  $$sudo apt-get update -qq; \
	  pkgs=""; for m in $$missing; do \
	    if [ $$m = magickwand ]; then \
	      for p in libmagickwand-6.q16-6 libmagickwand-6.q16-7t64; do \
	        if apt-cache show $$p >/dev/null 2>&1; then pkgs="$$pkgs $$p"; break; fi; done; \
	    else pkgs="$$pkgs $$m"; fi; done; \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$pkgs; \
	fi

python-deps: $(VENV)/.installed

$(VENV)/.installed: setup.cfg constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

node-deps: node_modules/.installed

node_modules/.installed: package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Regenerate the Python lock after changing setup.cfg ranges.
lock:
	rm -rf /tmp/resize-lock-venv && $(PYTHON) -m venv /tmp/resize-lock-venv
	/tmp/resize-lock-venv/bin/pip install -q '.[test,lambda]'
	/tmp/resize-lock-venv/bin/pip freeze --exclude resize-server | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) node_modules .pytest_cache .hypothesis
