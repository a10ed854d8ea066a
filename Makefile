test:
	python3 -m pytest -q tests
