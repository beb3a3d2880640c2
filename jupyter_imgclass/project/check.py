"""``Project.check()``: what is probably wrong with a project's data, before training more.

The findings come from :mod:`jupyter_imgclass.datacheck` (cleanlab for label issues,
features and perceptual hashes for near-duplicates); this module gathers the arrays from
the project (cached backbone features, the latest iteration's out-of-fold probabilities,
its folds) and names images by id. Fixes are the project's own one-transaction calls:
``project.set_tags(id, tag)``, ``project.remove_images([id])``,
``project.merge_tags(a, into=b)``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .features import project_features, unreadable_images
from .moved import moved

__all__ = ["DataCheck", "check_project"]


@dataclass
class DataCheck:
    """The data check's report.

    Attributes:
        label_issues: ``{"image_id", "tag", "suggested", "quality"}``, most suspect first
            (empty until an iteration with cross-validated predictions exists).
        near_duplicates: ``{"a", "b", "similarity", "straddles_folds"}``, most similar
            first; ``straddles_folds`` says whether the latest iteration scored one copy
            with a model that trained on the other (None when not both were in it).
        thin_tags: tags with fewer than 5 images.
        imbalance: a sentence when the largest tag is more than 3 times the smallest.
        odd_sizes: ids of images far smaller or larger than the median image.
        outliers: ``(image_id, score)`` of images far from every other in feature space.
        iteration: the iteration whose predictions the label issues rest on.
        unreadable: ``(image_id, "file: reason")`` of images whose stored file is missing
            or damaged; the other checks skip them (remove them, or restore the file).
    """

    label_issues: list[dict] = field(default_factory=list)
    near_duplicates: list[dict] = field(default_factory=list)
    thin_tags: list[str] = field(default_factory=list)
    imbalance: str | None = None
    odd_sizes: list[int] = field(default_factory=list)
    outliers: list[tuple[int, float]] = field(default_factory=list)
    iteration: int | None = None
    unreadable: list[tuple[int, str]] = field(default_factory=list)
    project: Any = field(default=None, repr=False, compare=False)

    def __getattr__(self, name: str):
        # only for names not found: an old spelling gets the new one in the error
        raise moved(self, name)

    def summary(self) -> str:
        """One line: how many findings of each kind."""
        return (
            f"{len(self.label_issues)} likely label issue(s), "
            f"{len(self.near_duplicates)} near-duplicate pair(s), "
            f"{len(self.thin_tags)} thin tag(s), "
            f"{'imbalanced' if self.imbalance else 'balanced'}, "
            f"{len(self.odd_sizes)} odd size(s), {len(self.outliers)} outlier(s)"
            + (f", {len(self.unreadable)} unreadable image(s)" if self.unreadable else "")
        )

    def __repr__(self) -> str:
        lines = [f"DataCheck: {self.summary()}"]
        for image_id, reason in self.unreadable[:10]:
            lines.append(f"  image {image_id} skipped: {reason}")
        for issue in self.label_issues[:10]:
            lines.append(
                f"  image {issue['image_id']}: tagged {issue['tag']!r}, "
                f"the model prefers {issue['suggested']!r} (quality {issue['quality']:.2f})"
            )
        for pair in self.near_duplicates[:10]:
            where = {True: ", in different folds", False: ", same fold", None: ""}
            lines.append(
                f"  images {pair['a']} and {pair['b']} look alike "
                f"(similarity {pair['similarity']:.3f}{where[pair['straddles_folds']]})"
            )
        if self.thin_tags:
            lines.append(f"  thin tags (< 5 images): {', '.join(self.thin_tags)}")
        if self.imbalance:
            lines.append(f"  imbalance: {self.imbalance}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>"


def check_project(project: Any, iteration: Any = None) -> DataCheck:
    """Runs every check of :class:`DataCheck` on ``project`` (see ``Project.check``)."""
    from .. import datacheck
    from ..data.labelled import cross_validation_folds
    from ..errors import ImgClassError

    report = DataCheck(project=project)
    every = project.images
    bad = unreadable_images(every)
    report.unreadable = [(i, f"{path}: {why}") for i, (path, why) in bad.items()]
    images = [im for im in every if im.id not in bad]
    if not images:
        return report
    counts = {t: c for t, c in project.counts().items() if t != "untagged"}
    report.thin_tags, report.imbalance = datacheck.tag_warnings(counts)
    report.odd_sizes = [
        images[k].id for k in datacheck.odd_sizes([(im.width, im.height) for im in images])
    ]
    try:
        it = iteration or project.iteration()
    except ImgClassError:
        it = None
    ids = [im.id for im in images]
    feats = project_features(project, ids, it)
    hashes = np.stack(
        [datacheck.perceptual_hash(project.array(i, 128), datacheck.CROPS) for i in ids]
    )
    report.outliers = [(ids[k], s) for k, s in datacheck.outliers(feats)]

    fold_of: dict[int, int] = {}
    if it is not None and it.evaluation.get("method") == "cross-validation":
        report.iteration = it.number
        truth, probs = it._val_truth_and_probs()
        scored = list(it.val_image_ids)
        for f, rows in enumerate(cross_validation_folds(truth, it.kind, seed=it.record.seed)):
            for r in rows:
                fold_of[scored[int(r)]] = f
        current = {im.id: im.tags for im in images}
        keep = [  # images still there with the labels they had (a fixed label is not flagged)
            r
            for r, image_id in enumerate(scored)
            if image_id in current and _label(current[image_id], it) == _truth(truth[r], it)
        ]
        if keep and it.kind == "multiclass":
            found = datacheck.label_issues(truth[keep], probs[keep], it.kind)
            for r, suggested, quality in found:
                row = keep[r]
                report.label_issues.append(
                    {
                        "image_id": scored[row],
                        "tag": it.classes[int(truth[row])],
                        "suggested": it.classes[suggested],
                        "quality": round(quality, 4),
                    }
                )
    for a, b, similarity in datacheck.near_duplicates(feats, hashes):
        fa, fb = fold_of.get(ids[a]), fold_of.get(ids[b])
        report.near_duplicates.append(
            {
                "a": ids[a],
                "b": ids[b],
                "similarity": similarity,
                "straddles_folds": None if fa is None or fb is None else fa != fb,
            }
        )
    return report


def _label(tags: tuple[str, ...], it: Any):
    return tuple(sorted(tags)) if it.kind == "multilabel" else (tags[0] if len(tags) == 1 else None)


def _truth(value: Any, it: Any):
    if it.kind == "multilabel":
        return tuple(sorted(it.classes[k] for k in np.flatnonzero(value)))
    return it.classes[int(value)]
