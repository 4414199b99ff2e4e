# medtasks — `make demo` and `make test` work on a fresh machine (they create .venv and install).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision first, pinned to the pair this machine serves from disk; pyproject stays loose (torch>=2.4).
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install demo lint test clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e ".[test,track]"
	# ultralytics pulls the GUI opencv-python (Qt/libGL), which shares cv2/ with our headless wheel: put the
	# headless binary back so `import cv2` works on servers without libGL (pip check stays clean).
	$(BIN)/pip install -q --force-reinstall --no-deps "opencv-python-headless==$$($(BIN)/python -c 'from importlib.metadata import version; print(version("opencv-python-headless"))')"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/medtasks run ich_classify

lint: install
	$(BIN)/ruff check medtasks tests scripts

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .cache .pytest_cache
