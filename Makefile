# gradlab tasks.  `make book` and `make test` work on a fresh machine with Python 3.11.
VENV := .venv
PY := $(VENV)/bin/python

# Parallel test workers (pytest-xdist); tests that share an expensive fixture run on one worker.
JOBS ?= 2
XDIST := -n $(JOBS) --dist loadgroup --no-loadscope-reorder

.PHONY: setup book test test-fast mutants labs grade student-repo notebooks bench clean

setup:
	bash scripts/setup.sh

## Build the whole book (executing every page) into _build/html, strictly (jupyter-book build . -W -n
## --keep-going), and stamp it with a hash of its sources (scripts/book_stamp.py).
book: setup
	$(PY) scripts/book_stamp.py build

## Run the whole test suite (unit tests, notebooks, nbgrader pipeline, browser, book). The book is built
## once: a stamped build that matches the sources (`make book`) is reused, otherwise the suite builds it.
test: setup
	$(PY) -m pytest $(XDIST)

## The unit tier alone (no book build, no nbgrader, no browser, no new environments): a few minutes.
test-fast: setup
	$(PY) -m pytest $(XDIST) -m "not slow"

## Seeded bugs (scripts/mutants.yaml), one at a time in a scratch copy: which ones the mirrored tests catch.
## Not part of `make test`. Options: make mutants MUTANTS_ARGS="--module score --timeout 300"; the fresh set an
## outside reviewer wrote without the project's list: make mutants MUTANTS_ARGS="--list scripts/mutants_fresh.yaml".
mutants: setup
	$(PY) scripts/mutants.py $(MUTANTS_ARGS)

## Regenerate the student labs in labs/ from the instructor sources in solutions/.
labs: setup
	$(PY) scripts/make_labs.py

## Autograde every submission of one lab: make grade LAB=lab1 (writes grades/LAB.csv; see book/instructors.md).
grade: setup
	$(PY) scripts/grade.py $(LAB)

## Export the student-facing repository (no solutions/, no instructor tools) into DEST.
student-repo: setup
	$(PY) scripts/export_student_repo.py $(DEST)

## Regenerate the paired .ipynb files (Colab launch targets) from the book's .md pages.
notebooks: setup
	$(PY) scripts/make_notebooks.py

## Speed benchmarks (not part of the test suite).
bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

reproduce: setup ; for s in mohamed grathwohl poole belghazi; do $(PY) benchmarks/reproduce_$$s.py || exit 1; done

## Remove build outputs only: student work, grades and the gradebook are never deleted.
clean:
	rm -rf _build .grading
