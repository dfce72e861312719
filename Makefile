# Two commands do all set-up on a fresh machine: `make course` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb)) $(wildcard notebooks/A[0-9]*.ipynb)
# Debian packages: the browser the site's test drives, and a CJK font that the site ships and
# the Chinese edition's plots use. Installed by the targets that need them, when missing.
CHROMIUM := /usr/bin/chromium
CJK_FONT := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
# Two cores. Tests and notebooks multiply small matrices, where a second BLAS
# thread costs more than it gives and spins against Numba's and torch's threads:
# one BLAS thread there. The benchmark sets 2 threads for every pool itself.
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 2
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: course test compile demo figures notebooks html site student generate check-generated bench clean

# The learner's environment: the `course` extra only (no torch).
$(VENV)/.course-installed: pyproject.toml
	@echo "installing the course's packages into $(VENV) (once) ..."
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@mkdir -p build
	@# pip's own notices are for packagers, not learners: they go to build/install.log,
	@# which is printed only if the install fails
	@( $(PY) -m pip install --quiet --upgrade pip && $(PY) -m pip install --quiet -e ".[course]" ) \
		> build/install.log 2>&1 || { cat build/install.log; exit 1; }
	@$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

# The tester's: the `test` extra (the course's packages, pytest, nbval, Playwright, torch as oracle).
$(VENV)/.test-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

# Without root or apt the site still builds; Chinese text then uses the reader's own fonts.
$(CJK_FONT):
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing a CJK font (fonts-wqy-microhei) ..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei >/dev/null; \
	else echo "note: no CJK font here (apt-get install fonts-wqy-microhei): Chinese text will use the reader's fonts"; fi

## make test: the whole suite (unit tests, torch agreement, gradient checks, the site in a browser,
## the student edition, nbval on every notebook)
test: $(VENV)/.test-installed $(CHROMIUM) $(CJK_FONT)
	$(PY) -m lstmkit compile
	$(PY) -m pytest tests $(NOTEBOOKS) --nbval --nbval-current-env \
		--nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider

## make course: the course as a book in build/html/ (chapters run through a cache in build/)
course: $(VENV)/.course-installed $(CJK_FONT)
	@$(PY) -m lstmkit compile
	@$(PY) -m lstmkit.course site

site html: course

## make student: the student edition (solutions removed, checks kept) in build/student/
student: $(VENV)/.course-installed
	@$(PY) -m lstmkit.course student

## For the authors: these three rewrite tracked files, and only they do.
## make figures: redraw the diagrams and the chapters' plots into figures/
figures: $(VENV)/.course-installed
	$(PY) -m lstmkit.course figures

## make notebooks: re-run every chapter and write its outputs back (what nbval compares)
notebooks: $(VENV)/.course-installed
	$(PY) -m lstmkit.course execute

## make generate: rewrite the generated kernels
generate: $(VENV)/.course-installed
	$(PY) -m lstmkit generate

## make compile: compile every built-in cell's kernels into Numba's cache, one process per core
## (once per machine; `make course` and `make test` do it first)
compile: $(VENV)/.course-installed
	$(PY) -m lstmkit compile

demo: $(VENV)/.course-installed
	$(PY) -m lstmkit demo

check-generated: $(VENV)/.course-installed
	$(PY) -m lstmkit generate --check

## make bench: lstmkit vs NumPy vs torch CPU (OPENBLAS_CORETYPE/L2_SIZE unset for this command only)
bench: $(VENV)/.test-installed
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2 \
		$(PY) benchmarks/bench.py

clean:
	rm -rf build $(VENV)
