# Two commands do all set-up on a fresh machine: `make course` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb)) $(wildcard notebooks/A[0-9]*.ipynb)
# Two cores. Tests and notebooks multiply small matrices, where a second BLAS
# thread costs more than it gives and spins against Numba's and torch's threads:
# one BLAS thread there. The benchmark sets 2 threads for every pool itself.
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 2
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: course test demo figures notebooks html student generate check-generated bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,course]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

## make test: the whole suite (unit tests, torch agreement, gradient checks, nbval on every notebook)
test: $(VENV)/.installed
	$(PY) -m pytest tests $(NOTEBOOKS) --nbval --nbval-current-env \
		--nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider

## make course: derive/generate/check every cell, run every notebook, draw figures, render HTML
course: $(VENV)/.installed
	$(PY) -m lstmkit demo
	$(PY) -m lstmkit.course all

demo: $(VENV)/.installed
	$(PY) -m lstmkit demo

figures: $(VENV)/.installed
	$(PY) -m lstmkit.course figures

notebooks: $(VENV)/.installed
	$(PY) -m lstmkit.course execute

html: $(VENV)/.installed
	$(PY) -m lstmkit.course html

student: $(VENV)/.installed
	$(PY) -m lstmkit.course student

generate: $(VENV)/.installed
	$(PY) -m lstmkit generate

check-generated: $(VENV)/.installed
	$(PY) -m lstmkit generate --check

## make bench: lstmkit vs NumPy vs torch CPU (OPENBLAS_CORETYPE/L2_SIZE unset for this command only)
bench: $(VENV)/.installed
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2 \
		$(PY) benchmarks/bench.py

clean:
	rm -rf build $(VENV)
