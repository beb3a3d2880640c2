"""Project store: create/open, tags and their rules, labels, undo, events, reopen."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from PIL import Image

import jupyter_imgclass as ic
from jupyter_imgclass.data.store import SCHEMA_VERSION


@pytest.fixture
def project(tmp_path):
    p = ic.Project.create(tmp_path / "proj", kind="multiclass")
    yield p
    p.close()


def test_create_then_open_restores_everything(tmp_path, colour_folder):
    p = ic.Project.create(tmp_path / "proj", kind="multilabel", name="Colours")
    report = p.add_folder(colour_folder)
    assert len(report.added) == 18 and not report.rejected
    first = next(im for im in p.images if im.tags == ("red",))
    p.set_tags(first.id, ["red", "shiny"])
    p.close()

    q = ic.Project.open(tmp_path / "proj")
    assert q.kind == "multilabel" and q.name == "Colours"
    assert len(q.images) == 18
    assert q.image(first.id).tags == ("red", "shiny")
    assert q.counts() == {"blue": 6, "green": 6, "red": 6, "shiny": 1, "untagged": 0}
    assert all(im.path.is_file() and im.path.is_relative_to(q.path) for im in q.images)
    q.close()


def test_create_refuses_existing_project_and_non_empty_folder(tmp_path):
    ic.Project.create(tmp_path / "p").close()
    with pytest.raises(ic.ProjectError, match="already exists"):
        ic.Project.create(tmp_path / "p")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("x")
    with pytest.raises(ic.ProjectError, match="not empty"):
        ic.Project.create(tmp_path / "full")
    with pytest.raises(ic.ProjectError, match="kind"):
        ic.Project.create(tmp_path / "q", kind="regression")


def test_open_refuses_non_project_folders(tmp_path):
    with pytest.raises(ic.ProjectError, match="no such folder"):
        ic.Project.open(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ic.ProjectError, match="not a jupyter_imgclass project"):
        ic.Project.open(tmp_path / "plain")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "project.sqlite").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(ic.ProjectError, match="not a jupyter_imgclass database"):
        ic.Project.open(tmp_path / "junk")


def test_database_is_wal_with_foreign_keys_and_versioned(project):
    conn = sqlite3.connect(project.path / "project.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    assert project.store.schema_version() == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    ic.Project.create(tmp_path / "p").close()
    conn = sqlite3.connect(tmp_path / "p" / "project.sqlite")
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(ic.ProjectError, match="newer"):
        ic.Project.open(tmp_path / "p")


def test_multiclass_allows_one_regular_tag(project, make_png):
    rep = project.add_images([make_png((1, 2, 3))], tags=["cat"])
    image_id = rep.added[0]
    with pytest.raises(ic.TagError, match="one tag per image"):
        project.set_tags(image_id, ["cat", "dog"])
    assert project.image(image_id).tags == ("cat",)  # unchanged after the refusal
    project.set_tags(image_id, "dog")
    assert project.image(image_id).tags == ("dog",)
    project.set_tags(image_id, [])
    assert project.image(image_id).tags == ()
    bad = project.add_images([make_png((9, 9, 9))], tags=[["cat", "dog"]])
    assert bad.added == [] and "one tag per image" in bad.rejected[0][1]


def test_negative_tag_stands_alone(tmp_path, make_png):
    p = ic.Project.create(tmp_path / "ml", kind="multilabel")
    neg = p.create_negative_tag()
    assert neg.is_negative and p.negative_tag == "Negative"
    assert p.create_negative_tag().id == neg.id  # idempotent
    image_id = p.add_images([make_png((5, 5, 5))]).added[0]
    p.set_tags(image_id, ["Negative"])
    with pytest.raises(ic.TagError, match="none of these"):
        p.set_tags(image_id, ["Negative", "cat"])
    assert p.tag_names == []  # the negative tag is not a class
    p.set_tags(image_id, ["cat", "dog"])  # multilabel: fine
    assert p.image(image_id).tags == ("cat", "dog")
    p.close()


@pytest.mark.parametrize(
    "bad",
    ["", "   ", "a\x00b", "x" * 101, 42, None, "cat\u200b", "\u202etac", "do\u2066g", "\ufeffcat"],
)
def test_bad_tag_names_are_refused_with_reason(project, bad):
    with pytest.raises(ic.TagError, match="tag name"):
        project.create_tag(bad)
    assert project.tags == []


def test_look_alike_tags_name_the_hidden_character(project):
    with pytest.raises(ic.TagError, match="U\\+200B ZERO WIDTH SPACE"):
        project.create_tag("cat\u200b")
    assert project.create_tag("chat noir 🐈").name == "chat noir 🐈"


def test_unicode_and_case_insensitive_tags(project, make_png):
    project.create_tag("Café ☕")
    with pytest.raises(ic.TagError, match="already exists"):
        project.create_tag("café ☕")
    image_id = project.add_images([make_png((0, 0, 0))], tags=["café ☕"]).added[0]
    assert project.image(image_id).tags == ("Café ☕",)


def test_rename_merge_delete_tags(project, make_png):
    ids = project.add_images(
        [make_png((i, i, i), seed=i) for i in range(6)],
        tags=[["cat"], ["cat"], ["kitty"], ["dog"], ["puppy"], []],
    ).added
    project.rename_tag("cat", "Cat")
    assert project.image(ids[0]).tags == ("Cat",)
    with pytest.raises(ic.TagError, match="merge instead"):
        project.rename_tag("Cat", "dog")
    moved = project.merge_tags(["kitty"], into="Cat")
    assert moved == 1 and project.image(ids[2]).tags == ("Cat",)
    project.merge_tags(["dog", "puppy"], into="Canine")
    assert project.counts() == {"Canine": 2, "Cat": 3, "untagged": 1}
    assert project.delete_tag("Canine") == 2
    assert project.image(ids[3]).tags == ()
    assert len(project.images) == 6  # deleting a tag never deletes images
    with pytest.raises(ic.TagError, match="no tag called"):
        project.delete_tag("nope")


def test_undo_restores_previous_labels(project, make_png):
    image_id = project.add_images([make_png((0, 0, 1))]).added[0]
    project.set_tags(image_id, "a")
    project.set_tags(image_id, "b")
    assert project.undo() == (image_id, ["a"], ["b"])
    assert project.image(image_id).tags == ("a",)
    assert project.undo() == (image_id, [], ["a"])
    assert project.image(image_id).tags == ()
    assert project.undo() is None


def test_counts_and_warnings(project, make_png):
    project.add_images([make_png((1, 1, 1), seed=i) for i in range(12)], tags=["many"])
    project.add_images([make_png((2, 2, 2), seed=i) for i in range(3)], tags=["few"])
    project.add_images([make_png((3, 3, 3))])
    assert project.counts() == {"few": 3, "many": 12, "untagged": 1}
    warnings = project.warnings()
    assert any("'few' has 3 images" in w for w in warnings)
    assert any("imbalanced" in w and "'many' has 12" in w for w in warnings)


def test_events_reach_listeners_and_bad_listener_does_not_break(project, make_png):
    seen = []

    def broken(**_):
        raise RuntimeError("a buggy widget")

    project.on("images_added", broken)
    project.on("images_added", lambda ids: seen.append(("added", ids)))
    project.on("labels_changed", lambda ids: seen.append(("labels", ids)))
    project.on("tags_changed", lambda: seen.append(("tags",)))
    ids = project.add_images([make_png((7, 7, 7))]).added
    project.set_tags(ids[0], "x")
    assert ("added", ids) in seen and ("labels", ids) in seen and ("tags",) in seen
    with pytest.raises(ic.ImgClassError, match="unknown event"):
        project.on("nope", print)


def test_add_images_accepts_bytes_pil_arrays_and_paths(project, tmp_path, make_png):
    path = tmp_path / "a.png"
    path.write_bytes(make_png((10, 20, 30), seed=1))
    items = [
        path,
        str(path),  # same file twice: a duplicate
        make_png((40, 50, 60), seed=2),
        Image.new("RGB", (7, 5), (1, 2, 3)),
        np.full((6, 4, 3), 200, np.uint8),
    ]
    report = project.add_images(items, tags=["t"])
    assert len(report.added) == 4
    assert report.duplicates == [(str(path), report.added[0])]
    sizes = {(im.width, im.height) for im in project.images}
    assert (7, 5) in sizes and (4, 6) in sizes
    assert "4 added, 1 duplicate(s), 0 rejected" in repr(report)


def test_remove_images_deletes_rows_and_copies(project, make_png):
    ids = project.add_images([make_png((1, 1, 1), seed=i) for i in range(3)], tags=["a"]).added
    path = project.image(ids[0]).path
    assert project.remove_images([ids[0]]) == 1
    assert not path.exists() and len(project.images) == 2
    assert project.counts()["a"] == 2


def test_per_item_tag_count_mismatch_is_clear(project, make_png):
    with pytest.raises(ic.TagError, match="2 per-item entries for 3 items"):
        project.add_images([make_png((i, 0, 0), seed=i) for i in range(3)], tags=[["a"], ["b"]])


def test_image_ids_match_the_filters_without_reading_records(tmp_path):
    """``image_ids(filter)`` (what the paged labeller reads) gives the ids
    ``filter_images`` gives, for every filter, oldest first."""
    p = ic.Project.create(tmp_path / "ids", kind="multilabel")
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(9)]
    p.add_images(arrays[:3], tags=["cat"])
    p.add_images(arrays[3:5])
    p.add_images(arrays[5:7], tags=[["cat", "dog"], ["dog"]])
    p.add_images(arrays[7:])
    p.create_tag("empty")
    for name in (None, "all", "untagged", "tagged", "cat", "dog", "DOG", "empty"):
        ids = p.image_ids(name)
        assert ids == [im.id for im in p.filter_images(name)] == sorted(ids)
    assert len(p.image_ids()) == 9 and len(p.image_ids("untagged")) == 4
    with pytest.raises(ic.TagError, match="filter 'bird': no such tag"):
        p.image_ids("bird")
    p.close()
