# Quick start: `make run` (gateway on 127.0.0.1:8080) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= optmsg.toml

.PHONY: run test test-fast lint bench lock clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=23"
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	@test -f $(CONFIG) || $(BIN)/optmsg dev init --path $(CONFIG)
	OPTMSG_CONFIG=$(CONFIG) $(BIN)/optmsg serve

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check config inbox optin bridges gateway
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/webhook.py
	$(BIN)/python bench/smtp.py
	$(BIN)/python bench/trust_list.py
	$(BIN)/python bench/mms.py
	$(BIN)/python bench/messages_api.py
	$(BIN)/python bench/sse.py

lock: $(STAMP)
	{ printf '# Pinned versions for every fresh install (runtime and development tools).\n# Regenerate: make lock\n'; \
	  $(BIN)/python -m pip freeze --all --exclude-editable | grep -v -e '^optmsg-gateway' -e '^pip=='; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
