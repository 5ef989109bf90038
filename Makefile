# The two commands of the README: `make demo` and `make test` (each runs the set-up first).
.PHONY: install demo test test-fast bench
PY := .venv/bin/python

install:
	@bash tools/setup.sh

demo: install
	$(PY) -m spikeline run --dataset ndigits --model cnn --heads evolutionary --epochs 4 --T 8 --out runs/demo

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) benchmarks/bench_frames.py
