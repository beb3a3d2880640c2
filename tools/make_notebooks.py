"""Writes the workshop notebooks from the cell sources below (run once after editing).

Outputs are filled by executing them (``jupyter nbconvert --execute --inplace``) so that
nbval has stable outputs to compare; volatile cells are marked ``# NBVAL_IGNORE_OUTPUT``.
"""

from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}


def notebook(cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNEL
    nb.metadata["language_info"] = {"name": "python"}
    for kind, src in cells:
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(src.strip()))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(src.strip()))
    return nb


QUICKSTART = [
    ("md", """
# Quick start: a digit classifier in a few minutes on a CPU

This notebook walks the whole path: make a project, import images, train, read the
cross-validated metrics, predict, and export a portable bundle. It uses scikit-learn's
handwritten digits so it runs anywhere without downloads.
"""),
    ("code", """
import os, tempfile
import jupyter_imgclass as ic
from jupyter_imgclass import datasets

FAST = os.environ.get("IMGCLASS_FAST") == "1"   # the test suite shrinks the data
workdir = tempfile.mkdtemp(prefix="imgclass-quickstart-")
project = ic.Project.create(os.path.join(workdir, "digits"), kind="multiclass")
project
"""),
    ("md", "## 1. Import images\nEvery import returns a report: what was added, what was a duplicate, what was rejected and why."),
    ("code", """
data = datasets.digits().subset(8 if FAST else 30, seed=0)
report = data.to_project(project)
print(report.summary())
"""),
    ("code", """
counts = project.counts()
print({k: counts[k] for k in sorted(counts)})
"""),
    ("md", "## 2. Train\n`budget=\"quick\"` fits a logistic-regression head on a frozen ImageNet backbone (EfficientNet-Lite0) with every labelled image; features are computed once and cached. `project.train` returns at once; `run.wait()` blocks until the iteration is saved."),
    ("code", """
# NBVAL_IGNORE_OUTPUT
run = project.train(budget="quick", seed=0)
iteration = run.wait()
iteration
"""),
    ("md", "## 3. Evaluate by cross-validation\nEvery labelled image is scored by a model that did not train on it (5 folds): precision and recall at a probability threshold, average precision, accuracy and the confusion matrix; all of it as a DataFrame too. `iteration.report()` shows the same with a threshold slider."),
    ("code", """
overall = iteration.metrics["overall"]
print(iteration.evaluation_text())
print("cross-validated accuracy above 0.5:", overall["accuracy"] > 0.5)
"""),
    ("code", """
# NBVAL_IGNORE_OUTPUT
iteration.to_dataframe()
"""),
    ("code", """
# NBVAL_IGNORE_OUTPUT
iteration.report()
"""),
    ("md", "## 4. Predict"),
    ("code", """
image = data.images[0]
best = iteration.predict(image)[0]
print("true:", data.tags[data.labels[0]], "| predicted:", best.tag)
"""),
    ("md", "## 5. Export\nA bundle is a folder with `weights.safetensors`, `model.json` and a model card; `ic.load_model` gives the same probabilities back."),
    ("code", """
bundle = iteration.export(os.path.join(workdir, "bundle"))
model = ic.load_model(bundle)
same = model.predict(image)[0].tag == best.tag
print(sorted(p.name for p in bundle.iterdir()), same)
"""),
]


def main():
    HERE.mkdir(exist_ok=True)
    nbformat.write(notebook(QUICKSTART), HERE / "01-quickstart.ipynb")


if __name__ == "__main__":
    main()
