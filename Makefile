# gradlab tasks.  `make book` and `make test` work on a fresh machine with Python 3.11.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup book test labs notebooks bench clean

setup:
	bash scripts/setup.sh

## Build the whole book (executing every page) into _build/html.
book: setup
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

## Run the whole test suite (unit tests, notebooks, nbgrader pipeline, book build).
test: setup
	$(PY) -m pytest

## Regenerate the student labs in labs/ from the instructor sources in solutions/.
labs: setup
	$(PY) scripts/make_labs.py

## Regenerate the paired .ipynb files (Colab launch targets) from the book's .md pages.
notebooks: setup
	$(PY) scripts/make_notebooks.py

## Speed benchmarks (not part of the test suite).
bench: setup
	$(PY) benchmarks/bench_es.py

clean:
	rm -rf _build gradebook.db
