# The two commands a new user needs are `make demo` and `make test`; everything installs itself.
PY := .venv/bin/python

.PHONY: demo test lint unit-lowest sandbox lock clean

demo:
	scripts/demo.sh

test: .venv/.lock-stamp
	scripts/test.sh

lint: .venv/.lock-stamp
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

sandbox: .venv/.lock-stamp
	$(PY) -m sandbox serve --klaviyo-port 8701 --nosto-port 8702

lock:
	scripts/lock.sh

.venv/.lock-stamp: requirements/lock-newest.txt pyproject.toml
	scripts/bootstrap.sh newest

clean:
	rm -rf .venv .venv-lowest .demo .mypy_cache .ruff_cache .pytest_cache
