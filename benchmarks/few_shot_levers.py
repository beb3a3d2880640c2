"""Cheap few-shot levers on frozen features, measured before any product change (issue 35).

For each set (``drawn``, ``photos``, ``fashion``, split exactly as ``bench_transfer.py``
splits them with ``--pool rest``: the same train / unlabelled pool / test images per seed),
backbone (EfficientNet-Lite0, -Lite2), size (5 / 10 / 20 labelled images per tag) and seed,
it fits scikit-learn's ``LogisticRegressionCV(Cs=10, cv=min(5, k), max_iter=2000,
scoring="neg_log_loss")`` on frozen features and prints the TEST accuracy of:

- ``a base``: L2-normalised features (today's quick budget's recipe; the product's own
  solver differs in its C grid, 1 to 1024, its folds and its class weights);
- ``b centred``: minus the mean feature of train + unlabelled pool (SimpleShot's centring,
  a mean known at training time), then L2-normalised; test features centred the same way;
- ``c mirror-train``: the left-right mirrored training images as extra training rows;
- ``d mirror-test``: (a)'s test probabilities averaged over the image and its mirror;
- ``e c+d``: mirror-train and mirror-test together;
- ``b+e``: centring with both mirrors (a combination, not one of the single levers);
- ``f pseudo>=.9``: after (a), the pool images whose top probability is at least 0.9 added
  with their predicted tag, refitted once;
- ``f pseudo top-k``: after (a), for each tag the ``k`` pool images predicted as that tag
  with the highest probability, added and refitted once;
- ``g spreading``: scikit-learn's ``LabelSpreading(kernel="knn", n_neighbors=10)`` on
  train + pool (L2-normalised; never the test images, which arrive one by one), then the
  logistic regression on train + the pool's spread labels.
- ``h spreading/CV``: (g) or (a), switched by cross-validation on the labelled images
  only: in each of (a)'s folds, the spreading runs on the fold's training images + the
  pool + the held-out images (unlabelled), a ``LogisticRegression`` at (a)'s C is fitted
  with and without the pool's spread labels, and both are scored by log-loss on the
  held-out images; (g) is used when its summed held-out log-loss is lower. "pool rows"
  counts only the seeds where it was used.

With ``--ensemble``, a second table per set puts the backbones together with no pool
(``ensemble_rows``): each backbone's (a), their probabilities averaged, one regression on
their features side by side, the backbone chosen by cross-validated log-loss, and the
average used only where cross-validation prefers it (``--methods none`` skips the
per-backbone tables).

Columns: test accuracy for each seed, their mean, the mean's difference to (a), the pool
rows a method added (mean over seeds) and how many of them carry the right tag (a
diagnostic only: nothing is chosen on it), and the seconds its fit took.

C is chosen by cross-validated log-loss, as the quick budget chooses it (``--scoring
accuracy`` for scikit-learn's default): with 1 to 4 images of a tag in a fold, accuracy
ties over most of ``Cs=10``'s grid (1e-4 to 1e4) and the smallest C wins, which gives
near-uniform probabilities (no pool image reaches 0.9) and a base far below today's quick
(photos, Lite0, k=5, seed 0: 0.735 at C=1e-4 against 0.870 at C=1.3e3 by log-loss).

C is always chosen by cross-validation over the labelled training images only: the folds
are scikit-learn's ``StratifiedKFold(min(5, k))`` over the labelled images (what
``cv=min(5, k)`` does), the extra rows a method adds go with their image (a mirror stays in
its original's fold) or, for pool rows, always to the training side, and only labelled
originals are scored. The pseudo-labels come from a model fitted on every labelled image,
so the C chosen after them is slightly optimistic; the test images never enter any choice.
The test images are only scored; ``photos`` is the set to choose on, ``drawn`` and
``fashion`` the sets reported.

Features are computed once per image (and its mirror) and cached in ``--cache``
(default ``/tmp/few_shot_levers``), keyed by the image's bytes, so reruns are fast.

Usage::

    .venv/bin/python benchmarks/few_shot_levers.py
    .venv/bin/python benchmarks/few_shot_levers.py --datasets photos --sizes 5 --seeds 1
    .venv/bin/python benchmarks/few_shot_levers.py --summary-from run1.txt run2.txt
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_transfer  # noqa: E402

import jupyter_imgclass as ic  # noqa: E402
from jupyter_imgclass.data.images import load_rgb  # noqa: E402
from jupyter_imgclass.models.apply import extract_features  # noqa: E402

METHODS = (
    "a base",
    "b centred",
    "c mirror-train",
    "d mirror-test",
    "e c+d",
    "b+e",
    "f pseudo>=.9",
    "f pseudo top-k",
    "g spreading",
    "h spreading/CV",
)
THRESHOLD = 0.9
MIN_GAIN = 0.005  # a lever "gains" when its mean over cells is at least this (see summary)
SCORING = {"scoring": "neg_log_loss"}  # main() may set accuracy (scikit-learn's default)
_LAST_C: list[float] = []  # the C of each fit, for the table
SELECTED = set(METHODS)  # main() may narrow it (--methods)


def item_key(item) -> str:
    """sha1 of the image's bytes (a file's contents, or an array's pixels and shape)."""
    if isinstance(item, np.ndarray):
        data = str(item.shape).encode() + np.ascontiguousarray(item).tobytes()
    else:
        data = Path(item).read_bytes()
    return hashlib.sha1(data).hexdigest()


class Features:
    """Frozen features of one backbone, ``(image, mirror)`` per image key, cached on disk."""

    def __init__(self, cache: Path, dataset: str, spec, resize: str = "squash"):
        self.spec = spec
        self.resize = resize
        suffix = "" if resize == "squash" else f"-{resize}"
        self.path = cache / "features" / f"{dataset}-{spec.name}{suffix}.npz"
        self.table: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.path.is_file():
            with np.load(self.path) as z:
                for key, f, m in zip(z["keys"], z["plain"], z["mirror"], strict=True):
                    self.table[str(key)] = (f, m)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.table)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            keys=np.array(keys),
            plain=np.stack([self.table[k][0] for k in keys]),
            mirror=np.stack([self.table[k][1] for k in keys]),
        )
        tmp.replace(self.path)

    def ensure(self, items, chunk: int = 64) -> None:
        """Compute the features of every item not cached yet (and of its mirror)."""
        todo = {}
        for item in items:
            key = item_key(item)
            if key not in self.table:
                todo.setdefault(key, item)
        if not todo:
            return
        from flax import nnx

        model = self.spec.create(1, rngs=nnx.Rngs(0), pretrained=True)
        started = time.perf_counter()
        pending = list(todo.items())
        for start in range(0, len(pending), chunk):
            part = pending[start : start + chunk]
            arrays = np.stack(
                [load_rgb(item, self.spec.input_size, resize=self.resize) for _, item in part]
            )
            both = extract_features(model, self.spec, np.concatenate([arrays, arrays[:, :, ::-1]]))
            for j, (key, _) in enumerate(part):
                self.table[key] = (both[j], both[len(part) + j])
            self.save()
            done = min(start + chunk, len(pending))
            print(
                f"  {self.spec.name}: {done}/{len(pending)} images (and mirrors) "
                f"in {time.perf_counter() - started:.0f} s",
                flush=True,
            )

    def get(self, items) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.table[item_key(item)] for item in items]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def splits_of(dataset: str, cache: Path, sizes, seeds: int) -> dict:
    """``{(k, seed): (train, pool, test)}``: ``bench_transfer.py``'s splits with
    ``--pool rest``."""
    pool, test_fixed = bench_transfer.load_pool(dataset, cache)
    return {
        (k, seed): bench_transfer.split(dataset, k, seed, pool, test_fixed, True)
        for k in sizes
        for seed in range(seeds)
    }


def l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit(x_lab, y_lab, k, extra_x=None, extra_y=None, owner=None):
    """``LogisticRegressionCV(Cs=10, max_iter=2000)`` on the labelled rows plus extra rows.

    The folds are ``StratifiedKFold(min(5, k))`` over the labelled rows (as
    ``cv=min(5, k)``); an extra row goes to the training side of every fold where its
    ``owner`` (a labelled row's index) trains, or of every fold when its owner is -1 (pool
    rows); only labelled rows are scored.
    """
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    n = len(x_lab)
    if extra_x is None or len(extra_x) == 0:
        x, y, owner = x_lab, y_lab, np.zeros(0, np.int64)
    else:
        x, y = np.concatenate([x_lab, extra_x]), np.concatenate([y_lab, extra_y])
    splits = []
    for tr, va in StratifiedKFold(n_splits=min(5, k)).split(x_lab, y_lab):
        in_train = np.zeros(n, bool)
        in_train[tr] = True
        extra = np.flatnonzero((owner < 0) | in_train[np.maximum(owner, 0)]) + n
        splits.append((np.concatenate([tr, extra]), va))
    lr = LogisticRegressionCV(Cs=10, cv=splits, max_iter=2000, **SCORING)
    lr.fit(x, y)
    _LAST_C.append(float(lr.C_[0]))
    return lr


def evaluate(feats: Features, data, k: int, tags: list[str]) -> dict:
    """Every method on one split: ``{method: (test accuracy, pool rows added, of them
    right, seconds)}``."""
    from sklearn.semi_supervised import LabelSpreading

    train, pool, test = data
    f_tr, m_tr = feats.get([item for item, _ in train])
    f_pool, _ = feats.get([item for item, _ in pool])
    f_te, m_te = feats.get([item for item, _ in test])
    y_tr = np.array([tags.index(t) for _, t in train])
    y_pool = np.array([tags.index(t) for _, t in pool])  # diagnostics only
    y_te = np.array([tags.index(t) for _, t in test])
    n = len(train)
    out = {}

    def acc(probs) -> float:
        return float((probs.argmax(1) == y_te).mean())

    def timed(method, fn):
        if method not in SELECTED:
            out[method] = (np.nan, 0, 0, 0.0, np.nan)
            return
        started = time.perf_counter()
        _LAST_C.clear()
        result = fn()
        result = result if isinstance(result, tuple) else (result, 0, 0)
        c_ = _LAST_C[-1] if _LAST_C else np.nan
        out[method] = (*result, time.perf_counter() - started, c_)

    base = {}

    def a():
        base["lr"] = fit(l2(f_tr), y_tr, k)
        base["probs"] = base["lr"].predict_proba(l2(f_te))
        return acc(base["probs"])

    timed("a base", a)

    mean = np.concatenate([f_tr, f_pool]).mean(0)
    timed(
        "b centred",
        lambda: acc(fit(l2(f_tr - mean), y_tr, k).predict_proba(l2(f_te - mean))),
    )
    owner = np.arange(n)

    def mirror_train(centre):
        return fit(l2(f_tr - centre), y_tr, k, l2(m_tr - centre), y_tr, owner)

    mirrored = {}

    def c():
        mirrored["lr"] = mirror_train(0.0)
        return acc(mirrored["lr"].predict_proba(l2(f_te)))

    timed("c mirror-train", c)
    timed("d mirror-test", lambda: acc(base["probs"] + base["lr"].predict_proba(l2(m_te))))
    timed(
        "e c+d",
        lambda: acc(
            mirrored["lr"].predict_proba(l2(f_te)) + mirrored["lr"].predict_proba(l2(m_te))
        ),
    )

    def be():
        lr = mirror_train(mean)
        return acc(lr.predict_proba(l2(f_te - mean)) + lr.predict_proba(l2(m_te - mean)))

    timed("b+e", be)

    def with_pool(rows, labels):
        lr = fit(l2(f_tr), y_tr, k, l2(f_pool[rows]), labels, np.full(len(rows), -1))
        right = int((labels == y_pool[rows]).sum())
        return acc(lr.predict_proba(l2(f_te))), len(rows), right

    def pseudo_threshold():
        probs = base["lr"].predict_proba(l2(f_pool))
        rows = np.flatnonzero(probs.max(1) >= THRESHOLD)
        return with_pool(rows, base["lr"].classes_[probs[rows].argmax(1)])

    def pseudo_top():
        probs = base["lr"].predict_proba(l2(f_pool))
        guess = probs.argmax(1)
        rows = []
        for c_ in range(probs.shape[1]):
            mine = np.flatnonzero(guess == c_)
            rows += mine[np.argsort(-probs[mine, c_])][:k].tolist()
        rows = np.array(sorted(rows), np.int64)
        return with_pool(rows, base["lr"].classes_[guess[rows]])

    def spreading():
        x = l2(np.concatenate([f_tr, f_pool]))
        y = np.concatenate([y_tr, np.full(len(f_pool), -1)])
        ls = LabelSpreading(kernel="knn", n_neighbors=10).fit(x, y)
        return with_pool(np.arange(len(f_pool)), ls.transduction_[n:])

    # the pool's fit counts (a)'s seconds too: it needs (a)'s model
    timed("f pseudo>=.9", pseudo_threshold)
    timed("f pseudo top-k", pseudo_top)
    timed("g spreading", spreading)

    def spreading_switched():
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import log_loss
        from sklearn.model_selection import StratifiedKFold

        c_ = float(base["lr"].C_[0])
        losses = np.zeros(2)  # without, with the pool
        for tr, va in StratifiedKFold(n_splits=min(5, k)).split(f_tr, y_tr):
            x = l2(np.concatenate([f_tr[tr], f_pool, f_tr[va]]))
            y = np.concatenate([y_tr[tr], np.full(len(f_pool) + len(va), -1)])
            spread = LabelSpreading(kernel="knn", n_neighbors=10).fit(x, y)
            pool_y = spread.transduction_[len(tr) : len(tr) + len(f_pool)]
            for j, (xs, ys) in enumerate(
                [(l2(f_tr[tr]), y_tr[tr]),
                 (l2(np.concatenate([f_tr[tr], f_pool])), np.concatenate([y_tr[tr], pool_y]))]
            ):  # fmt: skip
                lr = LogisticRegression(C=c_, max_iter=2000).fit(xs, ys)
                probs = np.zeros((len(va), len(np.unique(y_tr))))
                probs[:, lr.classes_] = lr.predict_proba(l2(f_tr[va]))
                losses[j] += log_loss(
                    y_tr[va], np.clip(probs, 1e-7, 1), labels=range(probs.shape[1])
                )
        if losses[1] < losses[0]:
            return spreading()
        return acc(base["probs"])

    timed("h spreading/CV", spreading_switched)
    for m in ("f pseudo>=.9", "f pseudo top-k"):
        out[m] = (*out[m][:3], out[m][3] + out["a base"][3], out[m][4])
    return out


def ensemble_rows(feats: dict, data, k: int, tags: list[str]) -> dict:
    """Backbones together on one split (pool unused): ``{row: test accuracy}``.

    - each backbone's (a);
    - ``average``: the (a) probabilities of every backbone, averaged;
    - ``concat``: one ``LogisticRegressionCV`` on the backbones' L2-normalised features
      side by side (each half L2-normalised first, so both weigh the same);
    - ``choose``: the backbone whose (a) has the lowest cross-validated log-loss (what
      ``model="choose"`` does);
    - ``avg/CV``: ``average`` when the averaged out-of-fold probabilities (each backbone's
      ``LogisticRegression`` at its chosen C over the same folds) have a lower log-loss than
      the best single backbone's, else ``choose``: decided on the training images only.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    train, _, test = data
    y_tr = np.array([tags.index(t) for _, t in train])
    y_te = np.array([tags.index(t) for _, t in test])
    folds = list(StratifiedKFold(n_splits=min(5, k)).split(y_tr, y_tr))
    out, probs, oof, loss = {}, {}, {}, {}
    for name, f in feats.items():
        x_tr, x_te = l2(f.get([i for i, _ in train])[0]), l2(f.get([i for i, _ in test])[0])
        lr = fit(x_tr, y_tr, k)
        probs[name] = lr.predict_proba(x_te)
        out[name] = float((probs[name].argmax(1) == y_te).mean())
        oof[name] = cross_val_predict(
            LogisticRegression(C=float(lr.C_[0]), max_iter=2000),
            x_tr, y_tr, cv=folds, method="predict_proba",
        )  # fmt: skip
        loss[name] = log_loss(y_tr, np.clip(oof[name], 1e-7, 1), labels=range(len(tags)))
    average = np.mean(list(probs.values()), 0)
    out["average"] = float((average.argmax(1) == y_te).mean())
    cat = lambda part: np.concatenate(  # noqa: E731
        [l2(f.get([i for i, _ in part])[0]) for f in feats.values()], 1
    )
    out["concat"] = float(
        (fit(cat(train), y_tr, k).predict_proba(cat(test)).argmax(1) == y_te).mean()
    )
    best = min(loss, key=loss.get)
    out["choose"] = out[best]
    avg_loss = log_loss(
        y_tr, np.clip(np.mean(list(oof.values()), 0), 1e-7, 1), labels=range(len(tags))
    )
    out["avg/CV"] = out["average"] if avg_loss < loss[best] else out[best]
    out["avg used"] = float(avg_loss < loss[best])
    return out


def print_ensembles(dataset: str, feats: dict, splits: dict, sizes, seeds: int, tags) -> None:
    names = list(feats)
    print(f"\n{dataset}, backbones together ({' + '.join(names)}), pool unused: test accuracy")
    rows = [*names, "average", "concat", "choose", "avg/CV"]
    print(f"{'k':>3}  {'row':<20}" + "".join(f"{'seed ' + str(s):>8}" for s in range(seeds))
          + f"{'mean':>8}{'vs best':>9}")  # fmt: skip
    for k in sizes:
        runs = [ensemble_rows(feats, splits[(k, s)], k, tags) for s in range(seeds)]
        best = max(np.mean([r[n] for r in runs]) for n in names)
        for row in rows:
            accs = [r[row] for r in runs]
            mean = float(np.mean(accs))
            used = (
                f"  average used in {sum(r['avg used'] for r in runs):.0f}/{seeds}"
                if row == "avg/CV" else ""
            )  # fmt: skip
            print(f"{k:>3}  {row:<20}" + "".join(f"{a:>8.3f}" for a in accs)
                  + f"{mean:>8.3f}{mean - best:>+9.3f}{used}", flush=True)  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["photos", "drawn", "fashion"],
        choices=["fashion", "photos", "drawn"],
    )
    parser.add_argument(
        "--backbones", nargs="+", default=["efficientnet_lite0", "efficientnet_lite2"]
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[5, 10, 20])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/few_shot_levers"))
    parser.add_argument(
        "--scoring",
        default="neg_log_loss",
        choices=["neg_log_loss", "accuracy"],
        help="how LogisticRegressionCV chooses C (accuracy, scikit-learn's default, ties "
        "at few images a fold and then takes the smallest C)",
    )
    parser.add_argument(
        "--features-only", action="store_true", help="compute and cache the features, no fits"
    )
    parser.add_argument(
        "--summary-from",
        nargs="+",
        type=Path,
        help="print only the summary, read from the tables of earlier runs' output",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        help="the methods to run ('a base' always runs: the others are compared to it; "
        "'none' with --ensemble: only the backbones-together table)",
    )
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="also the backbones together (probabilities averaged, features side by side, "
        "chosen by CV), with no pool",
    )
    args = parser.parse_args(argv)
    SELECTED.clear()
    SELECTED.update({"a base", *args.methods})
    if args.summary_from:
        deltas = read_tables(args.summary_from)
        args.datasets = sorted({d for d, *_ in deltas})
        args.backbones = sorted({b for _, b, *_ in deltas})
        args.sizes = sorted({k for _, _, k, _ in deltas})
        print_summary(deltas, args)
        return 0
    SCORING["scoring"] = args.scoring
    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
    warnings.filterwarnings("ignore", category=UserWarning, module="sklearn")
    warnings.filterwarnings("ignore", message=".*lbfgs failed to converge.*")
    started_all = time.perf_counter()
    deltas: dict[tuple[str, str, int, str], float] = {}
    for dataset in args.datasets:
        splits = splits_of(dataset, args.cache, args.sizes, args.seeds)
        everything = {
            item_key(item): item for d in splits.values() for part in d for item, _ in part
        }
        tags = sorted({t for _, t in next(iter(splits.values()))[0]})
        together = {}
        for name in args.backbones:
            spec = ic.models.get(name)
            feats = Features(args.cache, dataset, spec)
            feats.ensure(list(everything.values()))
            together[name] = feats
            if args.features_only:
                continue
            if args.ensemble and args.methods == ["none"]:
                continue
            sizes = {k: tuple(len(p) for p in splits[(k, 0)]) for k in args.sizes}
            print(
                f"\n{dataset}, {name}: test accuracy; train / pool / test images per k: "
                + ", ".join(f"k={k}: {t}/{p}/{s}" for k, (t, p, s) in sizes.items()),
                flush=True,
            )
            seed_cols = "".join(f"{'seed ' + str(s):>8}" for s in range(args.seeds))
            print(
                f"{'k':>3}  {'method':<16}{seed_cols}{'mean':>8}{'vs a':>8}"
                f"{'pool rows':>11}{'right':>8}{'fit s':>7}  C per seed",
                flush=True,
            )
            for k in args.sizes:
                runs = [evaluate(feats, splits[(k, seed)], k, tags) for seed in range(args.seeds)]
                base = np.mean([r["a base"][0] for r in runs])
                for method in [m for m in METHODS if m in SELECTED]:
                    accs = [r[method][0] for r in runs]
                    added = np.mean([r[method][1] for r in runs])
                    right = np.mean([r[method][2] for r in runs])
                    secs = np.mean([r[method][3] for r in runs])
                    cs = [r[method][4] for r in runs]
                    c_text = "/".join("-" if np.isnan(c) else f"{c:.2g}" for c in cs)
                    mean = float(np.mean(accs))
                    deltas[(dataset, name, k, method)] = mean - base
                    pool_text = (
                        f"{added:>11.0f}{right / max(added, 1):>8.2f}" if added else " " * 19
                    )
                    print(
                        f"{k:>3}  {method:<16}"
                        + "".join(f"{x:>8.3f}" for x in accs)
                        + f"{mean:>8.3f}{mean - base:>+8.3f}{pool_text}{secs:>7.2f}  {c_text}",
                        flush=True,
                    )
            print(f"({time.perf_counter() - started_all:.0f} s so far)", flush=True)
        if args.ensemble and len(together) > 1 and not args.features_only:
            print_ensembles(dataset, together, splits, args.sizes, args.seeds, tags)
    if deltas:
        print_summary(deltas, args)
    print(f"\ntotal {time.perf_counter() - started_all:.0f} s")
    return 0


def read_tables(paths) -> dict[tuple[str, str, int, str], float]:
    """``{(set, backbone, k, method): mean - (a)}`` from the tables ``main`` printed."""
    deltas, where = {}, None
    for path in paths:
        for line in Path(path).read_text().splitlines():
            head = line.split(":")[0].split(", ")
            if len(head) == 2 and head[0] in ("photos", "drawn", "fashion"):
                where = tuple(head)
                continue
            words = line.split()
            if where and len(words) > 2 and words[0].isdigit():
                method = next((m for m in METHODS if line[5:].startswith(m)), None)
                if method:
                    numbers = line[5 + len(method) :].split()
                    # the first signed number is "vs a" (the accuracies carry no sign)
                    delta = next(w for w in numbers if w[0] in "+-" and "." in w)
                    deltas[(*where, int(words[0]), method)] = float(delta)
    return deltas


def print_summary(deltas: dict, args) -> None:
    """Each lever's difference to (a), averaged over sizes and backbones per set; a lever
    "gains on photos" when that average is at least ``MIN_GAIN`` and it wins at least half
    the cells (one test image of photos' 116-162 is 0.006-0.009 of a seed's accuracy)."""
    print(
        "\nsummary: difference to (a), mean over k and backbones (cells won / cells), "
        f"per set; 'gains on photos': mean >= {MIN_GAIN} and half the cells won"
    )
    sets = [d for d in ("photos", "drawn", "fashion") if d in args.datasets]
    print(f"{'method':<16}" + "".join(f"{d:>18}" for d in sets) + "   gains on photos")
    measured = [m for m in METHODS[1:] if any(key[3] == m for key in deltas)]
    for method in measured:
        line = f"{method:<16}"
        verdict = ""
        for d in sets:
            cells = [v for (ds, _, _, m), v in deltas.items() if ds == d and m == method]
            won = sum(v > 0 for v in cells)
            line += f"{np.mean(cells):>+10.3f} ({won:>2}/{len(cells):>2})"
            if d == "photos":
                verdict = "yes" if np.mean(cells) >= MIN_GAIN and won * 2 >= len(cells) else "no"
        print(line + f"   {verdict}")
    for name in args.backbones:
        print(f"\nper k, {name}:")
        for method in measured:
            line = f"  {method:<16}"
            for d in sets:
                cells = [deltas.get((d, name, k, method)) for k in args.sizes]
                line += f"  {d}:" + "".join(
                    f"{'n/a':>7}" if v is None else f"{v:>+7.3f}" for v in cells
                )
            print(line)


if __name__ == "__main__":
    sys.exit(main())
