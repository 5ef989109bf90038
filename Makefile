# The two commands of the README: `make demo` and `make test` (each runs the set-up first).
.PHONY: install demo test test-fast test-synapse-paths bench
PY := .venv/bin/python

install:
	@bash tools/setup.sh

demo: install
	$(PY) -m spikeline run --dataset ndigits --model cnn --heads evolutionary --epochs 4 --T 8 --out runs/demo

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

# the equivalence tests on each synapse path (pipeline/kernels/int_synapse.py): integers
# wherever exact, then float only
EQUIVALENCE := tests/test_pipeline_lava_equivalence.py tests/test_deploy_verify.py \
	tests/test_deploy_nir.py tests/test_deploy_lava_residual.py tests/test_pipeline_int_synapse.py
test-synapse-paths: install
	SPIKELINE_SYNAPSE=int $(PY) -m pytest -q -m "not slow" $(EQUIVALENCE)
	SPIKELINE_SYNAPSE=float $(PY) -m pytest -q -m "not slow" $(EQUIVALENCE)

bench: install
	$(PY) benchmarks/bench_frames.py
