# Quick start: `make run` (gateway on 127.0.0.1:8080) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= optmsg.toml

.PHONY: run test test-fast lint bench lock clean chromium

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=23"
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	@test -f $(CONFIG) || $(BIN)/optmsg dev init --path $(CONFIG)
	OPTMSG_CONFIG=$(CONFIG) $(BIN)/optmsg serve

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

# The browser tests (tests/browser) drive Debian's Chromium, never a browser that
# Playwright downloads; as root, install it when it is missing (otherwise they skip).
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check config inbox optin bridges gateway
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/webhook.py --breakdown
	$(BIN)/python bench/smtp.py
	$(BIN)/python bench/trust_list.py
	$(BIN)/python bench/mms.py
	$(BIN)/python bench/messages_api.py
	$(BIN)/python bench/sse.py
	$(BIN)/python bench/scaleout.py
	$(BIN)/python bench/chaos.py
	$(BIN)/python bench/spool.py --db postgresql
	$(BIN)/python bench/api_limits.py

lock: $(STAMP)
	{ printf '# Pinned versions for every fresh install (runtime and development tools).\n# Regenerate: make lock\n'; \
	  $(BIN)/python -m pip freeze --all --exclude-editable | grep -v -e '^optmsg-gateway' -e '^pip=='; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
