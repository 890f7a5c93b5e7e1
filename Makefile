# Two commands set everything up on a fresh machine:
#   make run    install into .venv and serve examples/server.tac on every CPU
#   make test   install into .venv (with test tools) and run lint, types and tests
#   make bench  every benchmark (installs wrk from Debian if missing; node is optional)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8080

.PHONY: run test lint install clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# twistd finds plugins in the twisted/plugins directories of sys.path, and
# an editable install (PEP 660) puts none there: a .pth of our own adds this
# checkout (see README).  An editable install leaves our modules uncompiled,
# and where PYTHONDONTWRITEBYTECODE is set every process would compile them
# again: ~35 ms of each master's and worker's start.  Without Twisted's
# plugin caches, the first twistd imports every plugin (and TLS) to write them.
install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	echo '$(CURDIR)' > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/twisted_cluster_checkout.pth"
	$(BIN)/python -m compileall -q twisted_cluster twisted/plugins
	$(BIN)/python -c 'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))'

run: install
	PORT=$(PORT) $(BIN)/twistd --nodaemon --pidfile= cluster --app examples/server.tac

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -p no:cacheprovider

# Every benchmark in one run, then the performance goals against it; the
# output goes in benchmarks/RESULTS.md by hand.
bench: install
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python benchmarks/all.py

clean:
	rm -rf $(VENV) build *.egg-info
