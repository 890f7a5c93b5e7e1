# Two commands set everything up on a fresh machine:
#   make run    install into .venv and serve examples/server.tac on every CPU
#   make test   install into .venv (with test tools) and run lint, types and tests,
#               then the unit tests on the oldest Twisted supported (test-oldest)
#   make bench  every benchmark (installs wrk from Debian if missing; node is optional)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8080

.PHONY: run test test-oldest lint install clean bench haproxy

# The oldest of everything setup.cfg allows, which test-oldest installs in a
# venv of its own: change them together.  Twisted 20.3 and older do not
# install on Python 3.11.
OLDEST_PINS  ?= Twisted[tls]==21.2.0 Automat==24.8.1 zope.interface==6.0
OLDEST_VENV  ?= .venv-oldest
OLDEST_BIN   := $(OLDEST_VENV)/bin
# Names the pins, so that the venv is made again when they change.
OLDEST_STAMP := $(OLDEST_VENV)/pinned-$(subst $(subst ,, ),+,$(subst [tls],,$(OLDEST_PINS)))
# The internals' tests and the unit tests: fakes and in-memory AMP, no
# cluster processes (two tests start a bare interpreter).  test_fuzz is left
# to the main run: hypothesis takes most of its time.
OLDEST_TESTS ?= tests/test_internals.py tests/test_heap.py tests/test_master.py \
	tests/test_listening.py tests/test_roundrobin.py tests/test_supervisor.py \
	tests/test_worker_channel.py tests/test_roster.py tests/test_scheduling.py \
	tests/test_handover.py \
	tests/test_lean.py::test_tlsBackOnFirstUse tests/test_lean.py::test_notWhenAlreadyLoaded

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

test: lint haproxy
	$(BIN)/pytest -p no:cacheprovider
	$(MAKE) --no-print-directory test-oldest

# tests/test_haproxy.py puts a real HAProxy in front of two clusters: as root
# (CI), install Debian's where it is missing; otherwise that test says why it
# skips.
haproxy:
	command -v haproxy >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && apt-get install -y -qq haproxy)

# A venv with the oldest pins, made once (and again when setup.cfg or the
# pins change); the .pth lets its twistd find the plugin too, for running
# other tests on it by hand: make test-oldest OLDEST_TESTS=tests/test_sharing.py
$(OLDEST_STAMP): setup.cfg
	rm -rf $(OLDEST_VENV)
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_BIN)/pip install --quiet --upgrade pip
	$(OLDEST_BIN)/pip install --quiet -e '.[unit,metrics,reload]' $(foreach pin,$(OLDEST_PINS),'$(pin)')
	echo '$(CURDIR)' > "$$($(OLDEST_BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/twisted_cluster_checkout.pth"
	touch $@

test-oldest: $(OLDEST_STAMP)
	$(OLDEST_BIN)/pytest -p no:cacheprovider -q $(OLDEST_TESTS)

# Every benchmark in one run, then the performance goals against it; the
# output goes in benchmarks/RESULTS.md by hand.
bench: install
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python benchmarks/all.py

clean:
	rm -rf $(VENV) $(OLDEST_VENV) build *.egg-info
