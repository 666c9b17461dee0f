# The two commands of the README. Both install everything they need first (scripts/setup.sh).
.PHONY: app test test-fast

app:
	scripts/setup.sh
	.venv/bin/python launch_app.py $(ARGS)

test:
	scripts/setup.sh --dev
	.venv/bin/python -m pytest $(ARGS)

# Not a set-up command: the quick loop while developing (no slow or browser tests).
test-fast:
	.venv/bin/python -m pytest -m "not slow and not browser" $(ARGS)
