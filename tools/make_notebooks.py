"""Writes the workshop notebooks from the cell sources below and executes them (run after
editing): ``.venv/bin/python tools/make_notebooks.py``.

Outputs are stored so that nbval has stable outputs to compare; volatile cells are marked
``# NBVAL_IGNORE_OUTPUT``. Widget state is not stored: a saved widget's CSS would be
loaded by JupyterLab ahead of the live one's when the notebook is opened again.
"""

import time
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
    (
        "md",
        """
# Quick start: from images to a published classifier, on a CPU

The whole path in a few cells, on scikit-learn's handwritten digits (built in, no
downloads): make a project, import images, label a few, train, read the report, try the
model, export it and call it as a web service. Run the cells top to bottom
(Shift+Enter); every widget also works with the mouse and keyboard.
""",
    ),
    (
        "code",
        """
import io, json, tempfile, urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

import jupyter_imgclass as ic
from jupyter_imgclass import datasets

workdir = Path(tempfile.mkdtemp(prefix="imgclass-quickstart-"))
project = ic.Project.create(workdir / "digits", kind="multiclass")
""",
    ),
    (
        "md",
        """
## 1. Import images
Thirty labelled images of each digit go in with their tags, and ten more without a tag,
for you to label. Every import returns a report: what was added, what was a duplicate,
what was rejected and why.
""",
    ),
    (
        "code",
        """
digits = datasets.digits()
labelled = digits.subset(30, seed=0)
report = labelled.to_project(project)
print(report.summary())

taken = {image.tobytes() for image in labelled.images}
new = [i for i in range(len(digits)) if digits.images[i].tobytes() not in taken]
unlabelled = [digits.images[i] for i in new[:10]]  # not in the project yet
print(project.add_images(unlabelled).summary())
""",
    ),
    (
        "md",
        """
## 2. Label
The labeller shows the untagged images. Click an image, then press a number key to tag
it (the numbers are on the tag buttons), Backspace to undo; "One at a time" shows one
large image. Every label is saved at once.
""",
    ),
    (
        "code",
        """
# NBVAL_IGNORE_OUTPUT
ic.labeller(project)
""",
    ),
    (
        "md",
        """
## 3. Train
`budget="quick"` puts a logistic-regression head on a frozen ImageNet network
(EfficientNet-Lite0): features are computed once per image and cached, so training takes
seconds. The cell returns at once and a live monitor shows the progress;
`run.wait()` waits for the saved iteration.
""",
    ),
    (
        "code",
        """
# NBVAL_IGNORE_OUTPUT
run = project.train(budget="quick", seed=0)
ic.monitor(run)
""",
    ),
    (
        "code",
        """
iteration = run.wait()
print(iteration.evaluation_text())
""",
    ),
    (
        "md",
        """
## 4. Read the report
Every labelled image was scored by a model that did not train on it (cross-validation).
Move the threshold slider to trade precision for recall; click a cell of the confusion
matrix to see those images.
""",
    ),
    (
        "code",
        """
# NBVAL_IGNORE_OUTPUT
ic.report(iteration)
""",
    ),
    (
        "md",
        """
## 5. Try it
On digits the project has never seen: the share it gets right, and one prediction with
its probability. Then the tester: upload or drop an image (or use the camera) and see a
bar per tag.
""",
    ),
    (
        "code",
        """
# NBVAL_IGNORE_OUTPUT
unseen = new[10:210]  # neither labelled nor waiting in the labeller
predicted = [iteration.predict(digits.images[i])[0].tag for i in unseen]
truth = [digits.tags[digits.labels[i]] for i in unseen]
accuracy = np.mean(np.array(predicted) == truth)
print(f"accuracy on {len(unseen)} unseen digits: {accuracy:.2f}")
""",
    ),
    (
        "code",
        """
print("most of them right:", accuracy > 0.8)
""",
    ),
    (
        "code",
        """
# NBVAL_IGNORE_OUTPUT
best = iteration.predict(digits.images[unseen[0]])[0]
print(f"true {truth[0]}, predicted {best.tag} with probability {best.probability:.2f}")
ic.tester(project)
""",
    ),
    (
        "md",
        """
## 6. Export and publish
A bundle is a folder you can copy anywhere (`weights.safetensors`, `model.json`, and
`model.onnx` for onnxruntime). `iteration.serve()` starts a REST endpoint with the hosted
Custom Vision prediction API's routes; any HTTP client can call it.
""",
    ),
    (
        "code",
        """
bundle = iteration.export(workdir / "bundle", onnx=True)
print(sorted(p.name for p in bundle.iterdir()))
""",
    ),
    (
        "code",
        """
server = iteration.serve()
buffer = io.BytesIO()
Image.fromarray(digits.images[unseen[0]]).save(buffer, format="PNG")
request = urllib.request.Request(
    server.routes["image"], data=buffer.getvalue(),
    headers={"Content-Type": "application/octet-stream"}, method="POST",
)
with urllib.request.urlopen(request) as response:
    answer = json.load(response)
top = answer["predictions"][0]
print("the endpoint gives the notebook's answer:", top["tagName"] == best.tag)
server.stop()
""",
    ),
    (
        "md",
        """
## Next
- `ic.Studio(project)` puts all of this in one tabbed widget.
- `02-classification-basics.ipynb`: what a classifier computes, from flower measurements
  to pixels.
- Exercise: label the ten untagged images above, train again, and compare
  `project.iterations[-1].metrics["overall"]` with the first iteration's.
""",
    ),
]

BASICS = [
    (
        "md",
        """
# Classification basics: features, probabilities, labels

A classifier predicts a *class* (here called a *tag*) from *features*. It computes a
*probability score* for every class, and the *label* it predicts is the most likely one.
It learns from data whose labels are known (training), then predicts labels of new data.

We start with flowers described by four measurements, build the smallest model that
outputs a probability per species in JAX, and then see that an image is just more
features: its pixel values.
""",
    ),
    (
        "code",
        """
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn.datasets import load_digits, load_iris
from sklearn.model_selection import train_test_split
""",
    ),
    (
        "md",
        """
## 1. The data: 150 iris flowers, 4 features, 3 species
""",
    ),
    (
        "code",
        """
iris = load_iris(as_frame=True)
table = iris.frame.rename(columns={"target": "species"})
table["species"] = [iris.target_names[k] for k in iris.target]
table.sample(5, random_state=0)
""",
    ),
    (
        "md",
        """
We keep a quarter of the flowers aside (*validation*): the model never trains on them,
so they tell us how it does on new flowers. The split is *stratified* (each species
keeps its share) and *seeded* (the same every run).
""",
    ),
    (
        "code",
        """
x = iris.data.to_numpy(np.float32)
y = iris.target.to_numpy()
x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
mean, std = x_train.mean(0), x_train.std(0)          # scale each feature (from training data only)
x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
print(len(x_train), "training flowers,", len(x_val), "validation flowers")
""",
    ),
    (
        "md",
        """
## 2. The model: a score per class, turned into probabilities
A weight per (feature, class) and a bias per class give each class a score; *softmax*
turns the scores into probabilities that sum to 1.
""",
    ),
    (
        "code",
        """
def init(n_features, n_classes):
    return {"w": jnp.zeros((n_features, n_classes)), "b": jnp.zeros(n_classes)}


def probabilities(params, x):
    scores = x @ params["w"] + params["b"]
    return jax.nn.softmax(scores)


params = init(4, 3)
print("before training, flower 0:", np.round(probabilities(params, x_val[:1]), 3))
""",
    ),
    (
        "md",
        """
## 3. Training: make the known labels likely
The *loss* is the average of `-log(probability of the true class)`. `jax.grad` computes
how the loss changes with every weight, and the optimiser (Adam, from optax) moves the
weights a little downhill, many times. `jax.jit` compiles the step with XLA.
""",
    ),
    (
        "code",
        """
def loss(params, x, y):
    p = probabilities(params, x)
    return -jnp.mean(jnp.log(p[jnp.arange(len(y)), y] + 1e-9))


def train(x, y, n_classes, steps=300, lr=0.1):
    params = init(x.shape[1], n_classes)
    opt = optax.adam(lr)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, value

    history = []
    for _ in range(steps):
        params, state, value = step(params, state)
        history.append(float(value))
    return params, history


def accuracy(params, x, y):
    return float(np.mean(np.argmax(probabilities(params, x), axis=1) == y))


params, history = train(x_train, y_train, 3)
print(f"loss {history[0]:.2f} -> {history[-1]:.2f}")
print(f"accuracy: training {accuracy(params, x_train, y_train):.2f}, "
      f"validation {accuracy(params, x_val, y_val):.2f}")
""",
    ),
    (
        "md",
        """
*Accuracy* is the share of flowers whose most likely species is the true one. The
validation figure is the honest one: those flowers were never used for training.

## 4. Predicting: probabilities, then the label
""",
    ),
    (
        "code",
        """
picks = [int(np.flatnonzero(y_val == k)[0]) for k in range(3)]  # one flower of each species
p = np.asarray(probabilities(params, x_val[picks]))
for row, truth in zip(p, y_val[picks]):
    scores = ", ".join(f"{name} {q:.2f}" for name, q in zip(iris.target_names, row))
    label = iris.target_names[row.argmax()]
    print(f"{scores}  ->  label {label} (true {iris.target_names[truth]})")
""",
    ),
    (
        "md",
        """
## 5. What the model decided
With only two features (petal length and width) we can draw the decision: every point of
the plane gets the label with the highest probability.
""",
    ),
    (
        "code",
        """
two = [2, 3]  # petal length, petal width (scaled)
params2, _ = train(x_train[:, two], y_train, 3)
gx, gy = np.meshgrid(np.linspace(-2, 2, 200), np.linspace(-2, 2, 200))
grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
regions = np.asarray(probabilities(params2, grid)).argmax(1).reshape(gx.shape)
fig, ax = plt.subplots(figsize=(5, 4))
ax.contourf(gx, gy, regions, alpha=0.25, levels=[-0.5, 0.5, 1.5, 2.5], cmap="viridis")
ax.scatter(x_val[:, 2], x_val[:, 3], c=y_val, cmap="viridis", edgecolor="k")
ax.set_xlabel("petal length (scaled)")
ax.set_ylabel("petal width (scaled)")
ax.set_title(f"validation accuracy {accuracy(params2, x_val[:, two], y_val):.2f}")
plt.show()
""",
    ),
    (
        "md",
        """
## 6. An image is an array of pixel values
A handwritten digit from scikit-learn is 8x8 pixels, each a grey level from 0 to 16. Laid
out in a row, that is 64 features, and the very same model can classify it.
""",
    ),
    (
        "code",
        """
digits = load_digits()
fig, axes = plt.subplots(1, 5, figsize=(8, 2))
for ax, image, label in zip(axes, digits.images, digits.target):
    ax.imshow(image, cmap="gray_r")
    ax.set_title(str(label))
    ax.axis("off")
plt.show()
print(digits.images[0].astype(int))
""",
    ),
    (
        "code",
        """
xd = (digits.data / 16.0).astype(np.float32)  # 64 features per image, 0..1
xd_train, xd_val, yd_train, yd_val = train_test_split(
    xd, digits.target, test_size=0.25, stratify=digits.target, random_state=0
)
params_d, _ = train(xd_train, yd_train, 10, steps=300)
print(f"digits, validation accuracy: {accuracy(params_d, xd_val, yd_val):.2f}")
""",
    ),
    (
        "md",
        """
A model that weighs each pixel on its own already does well on these tidy, centred
digits. Photos are harder: the same object moves, turns and changes colour, so a pixel
means nothing on its own. A CNN learns small patterns (edges, textures, parts) that can
appear anywhere in the image; `jupyter_imgclass` starts from a CNN already trained on
millions of photos and only learns the last step, which is why a few dozen images per tag
are enough (see `01-quickstart.ipynb`).

## Exercises
1. Train on only two flowers per species (`train_test_split(..., train_size=6)`): what
   happens to validation accuracy?
2. Drop the feature scaling in section 1. Does training still work with the same `lr`?
3. Which digits does the model confuse? Count `(predicted, true)` pairs on the
   validation set.
""",
    ),
]


IMPROVE = [
    ("md", """
# Label, read the errors, improve

A first model is rarely the best one, and its mistakes are the cheapest guide to the next
labels. In this notebook the data has a few labelling mistakes on purpose (as real data
does); we find them through the model's *top losses*, fix them, add images where the
confusion matrix says the model is weak, train again and compare the two iterations.
"""),
    ("code", """
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import jupyter_imgclass as ic
from jupyter_imgclass import datasets

digits = datasets.digits()
rng = np.random.default_rng(0)
order = rng.permutation(len(digits))
first, reserve, unseen = order[:150], order[150:450], order[450:750]
project = ic.Project.create(Path(tempfile.mkdtemp(prefix="imgclass-improve-")) / "digits")
truth = {}  # image id -> the true digit (what your eyes would say)


def add(indices, wrong=()):
    \"\"\"Adds digits with their tags; those in `wrong` get a wrong tag on purpose.\"\"\"
    tags = []
    for i in indices:
        tag = digits.tags[digits.labels[i]]
        if i in wrong:
            tag = digits.tags[(digits.labels[i] + 1) % 10]  # a slip of the finger
        tags.append([tag])
    report = project.add_images([digits.images[i] for i in indices], tags=tags)
    assert len(report.added) == len(indices), report.summary()  # no duplicate digits here
    for image_id, i in zip(report.added, indices):
        truth[image_id] = digits.tags[digits.labels[i]]
    return report


mistakes = set(first[:8].tolist())
print(add(first, wrong=mistakes).summary(), "-", len(mistakes), "of them tagged wrongly")
"""),
    ("md", """
## 1. Label
New images arrive untagged. Label these ten in the labeller (click an image, press the
number on its tag's button), or run the next cell, which tags them for you.
"""),
    ("code", """
# NBVAL_IGNORE_OUTPUT
report = project.add_images([digits.images[i] for i in reserve[:10]])
for image_id, i in zip(report.added, reserve[:10]):
    truth[image_id] = digits.tags[digits.labels[i]]
ic.labeller(project)
"""),
    ("code", """
for image in project.filter_images("untagged"):  # what the labeller would do with your keys
    project.set_tags(image.id, truth[image.id])
print(project.counts()["untagged"], "untagged left")
"""),
    ("md", """
## 2. Train and read the confusion matrix
Rows are the true tags, columns what the model predicted, counted over every labelled
image scored by cross-validation. Off the diagonal are the mistakes.
"""),
    ("code", """
# NBVAL_IGNORE_OUTPUT
first_iteration = project.train(budget="quick", seed=0).wait()
tags = first_iteration.classes
matrix = pd.DataFrame(first_iteration.metrics["confusion_matrix"], index=tags, columns=tags)
matrix
"""),
    ("code", """
# NBVAL_IGNORE_OUTPUT
ic.report(first_iteration)  # the same with a threshold slider; click a cell to see its images
"""),
    ("md", """
## 3. Top losses: where the model and the labels disagree most
An image whose label the model finds very unlikely is either hard or mislabelled. Look at
them: the mislabelled ones are easy to spot.
"""),
    ("code", """
losses = first_iteration.top_losses(12)
fig, axes = plt.subplots(2, 6, figsize=(10, 4))
for ax, item in zip(axes.ravel(), losses):
    ax.imshow(project.array(item["image_id"], 32))
    ax.set_title(f"tagged {item['true']}\\nmodel: {item['predicted']}", fontsize=9)
    ax.axis("off")
plt.tight_layout()
plt.show()
"""),
    ("code", """
# NBVAL_IGNORE_OUTPUT
wrongly_tagged = {image_id for image_id, tag in truth.items()
                  if project.image(image_id).tags != (tag,)}
found = [item for item in losses if item["image_id"] in wrongly_tagged]
print(f"{len(found)} of the {len(wrongly_tagged)} wrongly tagged images are among the top 12")
"""),
    ("code", """
print("most of the mistakes are found:", len(found) >= len(wrongly_tagged) // 2)
"""),
    ("md", """
## 4. Fix them, and add images where the matrix says
Fixing a label is one call (the labeller does the same with a key). Then the tag with the
lowest recall gets more examples from the reserve.
"""),
    ("code", """
# NBVAL_IGNORE_OUTPUT
for item in losses:
    if item["image_id"] in wrongly_tagged:
        project.set_tags(item["image_id"], truth[item["image_id"]])  # what you saw
recall = {tag: m["recall"] for tag, m in first_iteration.metrics["per_tag"].items()}
weakest = min(recall, key=recall.get)
extra = [i for i in reserve[10:] if digits.tags[digits.labels[i]] == weakest][:10]
print(f"weakest tag {weakest!r} (recall {recall[weakest]:.2f}):", add(extra).summary())
"""),
    ("md", """
## 5. Train again and compare
The metrics of each iteration are cross-validated on its own labels, so fixed labels also
change what is measured. The fair comparison is on digits neither iteration has seen.
"""),
    ("code", """
# NBVAL_IGNORE_OUTPUT
second_iteration = project.train(budget="quick", seed=0).wait()


def unseen_accuracy(iteration):
    predicted = [p[0].tag for p in iteration.predict([digits.images[i] for i in unseen])]
    return np.mean(np.array(predicted) == [digits.tags[digits.labels[i]] for i in unseen])


comparison = pd.DataFrame(
    {
        it.name: {
            "labelled images": it.metrics["overall"]["count"],
            "cross-validated accuracy": it.metrics["overall"]["accuracy"],
            "accuracy on 300 unseen digits": unseen_accuracy(it),
        }
        for it in (first_iteration, second_iteration)
    }
).round(3)
comparison
"""),
    ("code", """
print("no worse on unseen digits:", comparison.iloc[2, 1] >= comparison.iloc[2, 0] - 0.02)
"""),
    ("md", """
## Exercises
1. Put 20 mistakes instead of 8: how many of them do the top 12 losses find?
2. `project.suggest(10)` proposes unlabelled images to label next. Add 100 untagged
   digits from `reserve`, label the suggested ones, and compare with ten random ones.
3. Raise the threshold in the report until precision for every tag is above 0.95: what
   happens to recall?
"""),
]


TRANSFER = [
    ("md", """
# Transfer learning: why a few images are enough

**Product identification** is a classic use: a shop wants to recognise its products
from a photo. Fashion-MNIST (Zalando's catalogue thumbnails: shirts, trousers, bags,
shoes... ten tags) stands in for it here; it comes with Debian (`dataset-fashion-mnist`,
which `make run` installs when it can), so the workshop needs no network.

With 10 images per tag we compare three ways to train, on the same images, scored on the
same 300 test images that none of them saw:

- **from scratch**: a small CNN (`small_cnn`) whose weights start random;
- **quick**: a network trained on a million ImageNet photos (EfficientNet-Lite0) is kept
  frozen; only a logistic regression on its features is trained;
- **advanced**: the same, then the last stage of the network is fine-tuned too, and kept
  only when cross-validation says it helps.
"""),
    ("code", """
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import jupyter_imgclass as ic
from jupyter_imgclass import datasets

pool = datasets.fashion_mnist(n_per_class=20, split="train", seed=0)
test = datasets.fashion_mnist(n_per_class=30, split="test", seed=0)
print(pool, "|", test)
print("tags:", ", ".join(pool.tags))
workdir = Path(tempfile.mkdtemp(prefix="imgclass-transfer-"))
"""),
    ("code", """
fig, axes = plt.subplots(1, 10, figsize=(12, 1.8))
for ax, k in zip(axes, range(10)):
    ax.imshow(pool.images[np.flatnonzero(pool.labels == k)[0]])
    ax.set_title(pool.tags[k], fontsize=8)
    ax.axis("off")
plt.show()
"""),
    ("code", """
def test_accuracy(iteration):
    \"\"\"The share of the 300 test images whose most likely tag is the true one.\"\"\"
    predictions = iteration.predict(list(test.images))
    return float(np.mean([p[0].tag == test.tags[k] for p, k in zip(predictions, test.labels)]))


def project_with(per_tag, name):
    project = ic.Project.create(workdir / name)
    pool.subset(per_tag, seed=0).to_project(project)
    return project
"""),
    ("md", """
## 1. From scratch, 10 images per tag
"""),
    ("code", """
# NBVAL_IGNORE_OUTPUT
scratch_project = project_with(10, "scratch")
scratch = scratch_project.train(budget="advanced", model="small_cnn", epochs=60,
                                input_size=28, seed=0).wait()
results = {"from scratch (small_cnn)": test_accuracy(scratch)}
results
"""),
    ("md", """
## 2. Quick: pretrained features, 5, 10 and 20 images per tag
The backbone's features of each image are computed once and cached, so each training
takes seconds. The monitor shows the progress.
"""),
    ("code", """
# NBVAL_IGNORE_OUTPUT
quick = {}
for per_tag in (5, 10, 20):
    project = project_with(per_tag, f"quick-{per_tag}")
    iteration = project.train(budget="quick", seed=0).wait()
    quick[per_tag] = test_accuracy(iteration)
    print(f"{per_tag:>2} per tag: test accuracy {quick[per_tag]:.3f}, "
          f"cross-validated {iteration.metrics['overall']['accuracy']:.3f}")
results["quick (EfficientNet-Lite0 features)"] = quick[10]
"""),
    ("md", """
## 3. Advanced: fine-tune the top too (about a minute)
"""),
    ("code", """
# NBVAL_IGNORE_OUTPUT
advanced_project = project_with(10, "advanced")
run = advanced_project.train(budget="advanced", minutes=1.5, seed=0)
advanced = run.wait()
results["advanced (fine-tuned top)"] = test_accuracy(advanced)
print(advanced.evaluation.get("note") or "; ".join(run.warnings))
"""),
    ("code", """
# NBVAL_IGNORE_OUTPUT
table = pd.Series(results, name="test accuracy, 10 images per tag").round(3).to_frame()
table
"""),
    ("code", """
print("pretrained features beat training from scratch:",
      results["quick (EfficientNet-Lite0 features)"] > results["from scratch (small_cnn)"])
"""),
    ("code", """
sizes = sorted(quick)
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(sizes, [quick[n] for n in sizes], "o-", label="quick (pretrained features)")
ax.plot([10], [results["from scratch (small_cnn)"]], "s", label="from scratch")
ax.plot([10], [results["advanced (fine-tuned top)"]], "^", label="advanced")
ax.set_xlabel("training images per tag")
ax.set_ylabel("test accuracy")
ax.set_xticks(sizes)
ax.set_ylim(0, 1)
ax.legend(loc="lower right")
plt.show()
"""),
    ("md", """
## Why it works
A network trained on a million photos has already learned edges, textures, shapes and
parts; its last layer describes an image with 1,280 numbers in which "looks like a
sleeve" or "has a heel" are easy to separate. With 10 examples per tag, learning those
detectors from scratch is hopeless; drawing a line between tags in that ready-made space
is easy. Fine-tuning adjusts the detectors themselves, which pays when there are more
images or when they look unlike the photos the network learned from.

## Exercises
1. Train `small_cnn` from scratch with 20 and then 100 images per tag
   (`datasets.fashion_mnist(n_per_class=100, ...)`): where does it catch up?
2. Try `model="efficientnet_lite2"` in the quick budget: better, and how much slower?
3. Which tags are confused most? Look at `ic.report(iteration)` of the 10-per-tag model.
"""),
]


PUBLISH = [
    ("md", """
# Publish a model as a service

A trained iteration leaves the notebook in three forms: a **bundle** folder to copy
anywhere, an **ONNX** model for any runtime, and a **REST endpoint** that answers the
hosted Custom Vision prediction API, so apps written for that service keep working.
Choosing **thresholds** per tag is part of publishing: they decide which predictions a
client acts on.
"""),
    ("code", """
import io, json, tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import requests
from PIL import Image

import jupyter_imgclass as ic
from jupyter_imgclass import datasets

workdir = Path(tempfile.mkdtemp(prefix="imgclass-publish-"))
digits = datasets.digits()
project = ic.Project.create(workdir / "digits")
digits.subset(30, seed=0).to_project(project)
iteration = project.train(budget="quick", seed=0).wait()
print(iteration.evaluation_text())
"""),
    ("md", """
## 1. Thresholds per tag
A probability threshold per tag trades false alarms (precision) against misses (recall).
"Best F1" picks, per tag, the threshold that balances both on the cross-validated
predictions. They are saved with the iteration and travel into the bundle, the ONNX
model's metadata and the endpoint's answers.
"""),
    ("code", """
# NBVAL_IGNORE_OUTPUT
thresholds = iteration.set_thresholds("best_f1")
{tag: round(value, 2) for tag, value in thresholds.items()}
"""),
    ("md", """
**When a miss is expensive.** A classifier that flags damaged bridges in aerial photos,
or a suspicious spot in a medical image, is there so that a person looks again: a missed
case costs far more than a false alarm. Lower that tag's threshold until recall is close
to 1, and accept the extra false alarms (the report's slider shows both as you move it).
Such classifiers also need images like the ones they will see (the same camera, season,
scanner) and many of the rare class; a workshop laptop carries none of those datasets
offline, which is why these notebooks use digits and clothing.
"""),
    ("code", """
# NBVAL_IGNORE_OUTPUT
ic.report(iteration)
"""),
    ("md", """
## 2. The bundle, and ONNX without this package
"""),
    ("code", """
bundle = iteration.export(workdir / "bundle", onnx=True)
print(sorted(p.name for p in bundle.iterdir()))
card = json.loads((bundle / "model.json").read_text())
print("tags:", [t["name"] for t in card["tags"]])
print("input:", card["onnx"]["input"], "| output:", card["onnx"]["output"])
"""),
    ("code", """
image = digits.images[1500]  # not among the training images
session = ort.InferenceSession(str(bundle / "model.onnx"))
size = card["preprocessing"]["input_size"]
batch = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), np.float32)[None]
onnx_probabilities = session.run(["probabilities"], {"image": batch})[0][0]
ours = {p.tag: p.probability for p in ic.load_model(bundle).predict(image)}
tags = [t["name"] for t in card["tags"]]
print("ONNX and load_model agree:",
      max(abs(onnx_probabilities[k] - ours[t]) for k, t in enumerate(tags)) < 1e-3)
"""),
    ("md", """
## 3. The REST endpoint
`iteration.serve()` starts the service in the background on 127.0.0.1 (from a shell:
`jupyter-imgclass serve bundle/ --key SECRET`). With a key, every request needs the
`Prediction-Key` header, as on the hosted service.
"""),
    ("code", """
# NBVAL_IGNORE_OUTPUT
KEY = "workshop-key"
server = iteration.serve(key=KEY)
server.routes
"""),
    ("code", """
buffer = io.BytesIO()
Image.fromarray(image).save(buffer, format="PNG")
picture = buffer.getvalue()

answer = requests.post(
    server.routes["image"],
    data=picture,
    headers={"Prediction-Key": KEY, "Content-Type": "application/octet-stream"},
    timeout=30,
)
print(answer.status_code, sorted(answer.json()))
top = answer.json()["predictions"][0]
print("top tag agrees with the notebook:", top["tagName"] == max(ours, key=ours.get))
"""),
    ("code", """
wrong = requests.post(server.routes["image"], data=picture,
                      headers={"Prediction-Key": "guess"}, timeout=30)
print(wrong.status_code, wrong.json()["code"])
"""),
    ("md", """
## 4. The hosted service's own SDK, pointed here
Code written for Azure Custom Vision changes only its endpoint (and key, and project id):
"""),
    ("code", """
from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient
from msrest.authentication import ApiKeyCredentials

client = CustomVisionPredictionClient(
    server.url, ApiKeyCredentials(in_headers={"Prediction-key": KEY})
)
result = client.classify_image(project.id, iteration.published_name, picture)
best = max(result.predictions, key=lambda p: p.probability)
print("the SDK gets the same top tag:", best.tag_name == top["tagName"])
"""),
    ("md", """
## 5. Thresholds in client code
Each prediction carries its tag's `threshold` and whether it passed (`aboveThreshold`);
hosted clients ignore the extra fields. A client acts only on tags that pass:
"""),
    ("code", """
# NBVAL_IGNORE_OUTPUT
def tags_to_act_on(answer: dict) -> list[str]:
    return [p["tagName"] for p in answer["predictions"] if p["aboveThreshold"]]


print("act on:", tags_to_act_on(answer.json()))
print("thresholds:", {p["tagName"]: round(p["threshold"], 2) for p in answer.json()["predictions"]})
"""),
    ("code", """
server.stop()
print("stopped:", not server.running)
"""),
    ("md", """
## Exercises
1. Export without `onnx=True` and serve the bundle from a terminal:
   `jupyter-imgclass serve <bundle> --key SECRET`, then call it with `curl`.
2. Set a threshold of 0.95 for one tag with `iteration.set_thresholds({...})`, export
   again and check `aboveThreshold` in the answers.
3. Send a text file to the endpoint: what does it answer, and with which code?
"""),
]


UNDER_THE_HOOD = [
    ("md", """
# Under the hood: convolutions, jit, grad, one optimiser step, XLA

For the curious: the pieces a CNN is built from, run by hand on a real photo
(scikit-image's samples), and what JAX does with them.
"""),
    ("code", """
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx
from PIL import Image
from skimage import data

photo = data.chelsea()  # a cat, 300 x 451 pixels, RGB
grey = photo.mean(axis=2).astype(np.float32) / 255.0
print(photo.shape, photo.dtype, "->", grey.shape)
"""),
    ("md", """
## 1. A convolution
A 3x3 kernel slides over the image; each output pixel is the weighted sum of the 3x3
pixels under it. These two kernels respond to vertical and horizontal edges: the first
patterns a CNN learns look like them.
"""),
    ("code", """
vertical = jnp.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], jnp.float32)
kernels = jnp.stack([vertical, vertical.T], axis=-1)[:, :, None, :]  # HWIO: 3x3, 1 in, 2 out
x = jnp.asarray(grey)[None, :, :, None]                                # NHWC: 1 image, 1 channel
edges = jax.lax.conv_general_dilated(
    x, kernels, window_strides=(1, 1), padding="SAME",
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
)
fig, axes = plt.subplots(1, 3, figsize=(12, 3))
for ax, img, title in zip(axes, [grey, edges[0, :, :, 0], edges[0, :, :, 1]],
                          ["the photo", "vertical edges", "horizontal edges"]):
    ax.imshow(np.abs(img), cmap="gray")
    ax.set_title(title)
    ax.axis("off")
plt.show()
print("output shape:", edges.shape)
"""),
    ("md", """
## 2. `jax.jit`: compile once, run fast
`jax.jit` traces the Python function into a program and hands it to XLA, which fuses and
compiles it for this CPU (or a GPU). The first call compiles; later calls reuse it.
"""),
    ("code", """
def edge_strength(image):
    out = jax.lax.conv_general_dilated(image, kernels, (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sqrt(jnp.sum(out ** 2, axis=-1)).mean()


fast = jax.jit(edge_strength)
print("same value compiled and not:", bool(jnp.allclose(fast(x), edge_strength(x))))
program = jax.make_jaxpr(edge_strength)(x)  # the traced program, primitive by primitive
print("primitives:", [equation.primitive.name for equation in program.eqns])
"""),
    ("code", """
# NBVAL_IGNORE_OUTPUT
print(program.pretty_print(use_color=False))
"""),
    ("code", r"""
# NBVAL_IGNORE_OUTPUT
import re

hlo = fast.lower(x).compile().as_text()  # what XLA made of it for this machine
entry = re.sub(r", metadata=\{[^}]*\}", "", hlo[hlo.index("ENTRY"):])
print(entry[:1200])
"""),
    ("md", """
## 3. `jax.grad`: how the output changes with each input
Training needs the gradient of the loss with respect to every weight; `jax.grad` builds it
from the same program. Here: the gradient of a tiny loss with respect to a weight vector,
checked against the formula we can write by hand.
"""),
    ("code", """
features = jnp.array([0.5, -1.0, 2.0])
target = 1.0


def loss(w):
    return (jnp.dot(w, features) - target) ** 2


w = jnp.array([0.1, 0.2, 0.3])
by_jax = jax.grad(loss)(w)
by_hand = 2 * (jnp.dot(w, features) - target) * features
print("jax.grad:", np.round(by_jax, 4), "| by hand:", np.round(by_hand, 4))
"""),
    ("md", """
## 4. One optimiser step
An optimiser turns gradients into updates. With plain gradient descent (`optax.sgd`),
the update is `-learning_rate * gradient`, and the loss goes down.
"""),
    ("code", """
optimiser = optax.sgd(learning_rate=0.1)
state = optimiser.init(w)
updates, state = optimiser.update(by_jax, state)
w_next = optax.apply_updates(w, updates)
print("update == -0.1 * gradient:", bool(jnp.allclose(updates, -0.1 * by_jax)))
print(f"loss {float(loss(w)):.4f} -> {float(loss(w_next)):.4f}")
"""),
    ("md", """
## 5. What a pretrained network sees
EfficientNet-Lite0, trained on ImageNet, applied to the cat. Early layers respond to
edges and colours; deeper ones to parts and textures at a coarser grid. Below: a few
channels after the first stage (112 x 112) and before the last stage (7 x 7).
"""),
    ("code", """
from jupyter_imgclass import models
from jupyter_imgclass.models.apply import normalise

spec = models.get("efficientnet_lite0")
network = spec.create(1000, rngs=nnx.Rngs(0))  # ImageNet weights and classifier
network.eval()
size = spec.input_size
pixels = np.asarray(Image.fromarray(photo).resize((size, size)))[None]
x224 = normalise(pixels, spec.mean, spec.std)
early = network.lower(x224, 1)                 # after the stem and the first block
late = network.lower(x224, network.top_split())  # entering the last stage
fig, axes = plt.subplots(2, 6, figsize=(12, 4))
for row, maps in zip(axes, [early, late]):
    for ax, channel in zip(row, range(6)):
        ax.imshow(np.asarray(maps[0, :, :, channel]), cmap="magma")
        ax.set_title(f"{maps.shape[1]}x{maps.shape[2]} ch {channel}", fontsize=8)
        ax.axis("off")
plt.show()
"""),
    ("code", """
probabilities = np.asarray(jax.nn.softmax(network(x224)))[0]
print("ImageNet class 285 (Egyptian cat) is in the top 5:", 285 in np.argsort(probabilities)[-5:])
"""),
    ("md", """
## Exercises
1. Write a 3x3 kernel that blurs (all weights 1/9) and apply it.
2. `jax.grad` of `edge_strength` with respect to the image: which pixels matter most?
   Show it with `imshow`.
3. Replace `optax.sgd` by `optax.adam(0.1)`: is the first update the same size?
"""),
]


def execute(path: Path) -> float:
    """Runs ``path`` top to bottom in place, as a participant would; returns the seconds."""
    from nbconvert.preprocessors import ExecutePreprocessor

    nb = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    runner = ExecutePreprocessor(timeout=600, kernel_name="python3", store_widget_state=False)
    runner.preprocess(nb, {"metadata": {"path": str(path.parent)}})
    seconds = time.perf_counter() - started
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    return seconds


def main(only=()):
    """Writes and runs every notebook, or those whose names start with one of ``only``."""
    HERE.mkdir(exist_ok=True)
    for name, cells in (
        ("01-quickstart.ipynb", QUICKSTART),
        ("02-classification-basics.ipynb", BASICS),
        ("03-label-and-improve.ipynb", IMPROVE),
        ("04-transfer-learning.ipynb", TRANSFER),
        ("05-publish-as-a-service.ipynb", PUBLISH),
        ("06-under-the-hood.ipynb", UNDER_THE_HOOD),
    ):
        if only and not name.startswith(tuple(only)):
            continue
        nbformat.write(notebook(cells), HERE / name)
        print(f"{name}: ran top to bottom in {execute(HERE / name):.1f} s", flush=True)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
