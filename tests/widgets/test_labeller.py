"""LabellerWidget driven as the browser drives it; assertions on the project on disk."""

from __future__ import annotations

import jupyter_imgclass as ic
from jupyter_imgclass.widgets import LabellerWidget


def press(w: LabellerWidget, **request) -> None:
    """What the front end's ``model.send(request)`` delivers: one custom message."""
    w._handle_msg({"content": {"data": {"method": "custom", "content": request}}, "buffers": []})


def on_disk(project) -> dict[int, tuple[str, ...]]:
    with ic.Project.open(project.path) as again:
        return {im.id: im.tags for im in again.images}


def test_first_page_sends_thumbnails_as_bytes(untagged_project):
    w = LabellerWidget(untagged_project, page_size=5)
    assert len(w.items) == 5 and w.n_pages == 3 and w.total == 12
    assert all(isinstance(it["thumb"], bytes) and it["thumb"][:2] == b"\xff\xd8" for it in w.items)
    assert w.progress == "0 of 12 labelled"
    assert [t["key"] for t in w.tags] == ["1", "2", "3"]
    state, buffer_paths, buffers = __import__("ipywidgets").widgets.widget._remove_buffers(
        w.get_state()
    )
    assert ["items", 0, "thumb"] in buffer_paths  # bytes travel as binary buffers


def test_keys_label_advance_undo_and_skip(untagged_project):
    p = untagged_project
    w = LabellerWidget(p, filter="untagged")
    first, second, third = w.image_ids[:3]
    names = [t["name"] for t in w.tags]
    press(w, action="label", image_id=first, tag=names[0])  # key 1
    assert w.cursor == 1 and on_disk(p)[first] == (names[0],)
    press(w, action="label", tag=names[1])  # key 2: the image at the kernel's cursor
    press(w, action="label", tag=names[2])  # key 3
    assert w.progress == "3 of 12 labelled"
    assert w.items[2]["tags"] == [names[2]]
    press(w, action="undo")  # Backspace
    assert on_disk(p)[third] == () and w.current_id == third
    assert w.progress == "2 of 12 labelled"
    press(w, action="skip")  # S
    assert w.current_id == w.image_ids[3]
    press(w, action="move", step=-2)  # arrows
    assert w.current_id == second


def test_actions_are_messages_not_state(untagged_project):
    """A key press is a custom message: nothing of it is saved with the widget's state,
    and the same message twice acts twice (a trait set to the same value would not)."""
    w = LabellerWidget(untagged_project)
    before = set(w.get_state())
    press(w, action="move", step=1)
    press(w, action="move", step=1)
    assert w.current_id == w.image_ids[2]
    assert set(w.get_state()) == before and "action" not in before
    press(w, action="no-such-action")
    w._handle_msg({"content": {"data": {"method": "custom", "content": "1"}}, "buffers": []})
    assert w.current_id == w.image_ids[2] and w.error == ""  # unknown requests change nothing


def test_zero_is_negative_tag_created_on_demand(untagged_project):
    p = untagged_project
    w = LabellerWidget(p)
    target = w.current_id
    press(w, action="label", image_id=target, tag="__negative__")
    assert p.negative_tag is not None
    assert on_disk(p)[target] == (p.negative_tag,)
    assert w.tags[-1]["key"] == "0" and w.tags[-1]["negative"]


def test_multilabel_toggles_and_enter_confirms(tmp_path, make_images):
    p = ic.Project.create(tmp_path / "ml", kind="multilabel")
    p.add_images(make_images("red", 3, seed=1))
    p.create_tag("warm")
    p.create_tag("bright")
    w = LabellerWidget(p)
    target = w.current_id
    press(w, action="label", image_id=target, tag="warm")
    press(w, action="label", image_id=target, tag="bright")
    assert set(on_disk(p)[target]) == {"warm", "bright"} and w.current_id == target
    press(w, action="label", image_id=target, tag="warm")  # toggled off
    assert on_disk(p)[target] == ("bright",)
    press(w, action="confirm")  # Enter
    assert w.current_id != target
    p.close()


def test_new_tag_filters_and_paging(untagged_project):
    p = untagged_project
    w = LabellerWidget(p, filter="all", page_size=5)
    press(w, action="new_tag", name="purple")
    assert "purple" in [t.name for t in ic.Project.open(p.path).tags]
    assert "purple" in w.filter_options
    w.set_state({"page": 2})
    assert len(w.items) == 2 and w.items[0]["id"] == w.image_ids[10]
    press(w, action="move", step=-1)  # crosses back to page 2
    assert w.page == 1 and w.cursor == 4
    p.set_tags(w.image_ids[0], ["red"])
    w.set_state({"filter": "red"})
    assert w.total == 1 and w.items[0]["id"] == w.image_ids[0]
    w.set_state({"filter": "untagged"})
    assert w.total == 11


def test_bad_request_shows_error_and_keeps_data(untagged_project):
    p = untagged_project
    w = LabellerWidget(p)
    target = w.current_id
    press(w, action="new_tag", name="")
    assert w.error  # the reason from the project, shown in the widget
    press(w, action="label", image_id=target, tag="red")
    assert w.error == "" and on_disk(p)[target] == ("red",)
    w.set_state({"filter": "no-such-tag"})
    assert "no-such-tag" in w.error and w.items == []


def test_two_views_stay_in_sync_and_static_repr(untagged_project):
    p = untagged_project
    a, b = LabellerWidget(p, filter="all"), LabellerWidget(p, filter="all")
    target = a.current_id
    press(a, action="label", image_id=target, tag="green")
    assert b.items[0]["tags"] == ["green"] and b.progress == "1 of 12 labelled"
    bundle = a._repr_mimebundle_()
    bundle = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "1 of 12 labelled" in bundle["text/plain"]
    assert "application/vnd.jupyter.widget-view+json" in bundle
    b.close()
    p.set_tags(target, ["blue"])
    assert a.items[0]["tags"] == ["blue"]


def test_ten_thousand_images_page(tmp_path):
    import numpy as np

    p = ic.Project.create(tmp_path / "big")
    rng = np.random.default_rng(0)
    p.add_images([rng.integers(0, 255, (4, 4, 3), dtype=np.uint8) for _ in range(10_000)])
    w = LabellerWidget(p, page_size=24)
    assert w.total == 10_000 and w.n_pages == 417 and len(w.items) == 24
    assert w.progress == "0 of 10000 labelled"
    p.close()


def test_single_view_gets_the_image_itself_not_the_thumbnail(tmp_path):
    import io

    import numpy as np
    from PIL import Image

    p = ic.Project.create(tmp_path / "photos")
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (600, 900, 3), dtype=np.uint8)  # larger than the preview
    small = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)  # smaller than a thumbnail
    p.add_images([big, small])
    w = LabellerWidget(p, filter="all")
    assert w.preview == {}  # the grid sends only thumbnails
    w.mode = "single"
    sizes = {}
    for _ in range(2):
        data = w.preview["data"]
        assert w.preview["id"] == w.current_id and data[:2] == b"\xff\xd8"
        sizes[w.current_id] = Image.open(io.BytesIO(data)).size
        press(w, action="move", step=1)
    assert sorted(sizes.values()) == [(30, 20), (480, 320)]  # never upscaled, 480 px at most
    thumb = Image.open(io.BytesIO(w.items[0]["thumb"])).size
    assert max(thumb) == 160  # what the single view showed, blown up, before
    w.mode = "grid"
    assert w.preview == {}
    p.close()


def test_suggested_view_walks_the_suggestions_and_enter_accepts_the_guess(tmp_path, make_images):
    p = ic.Project.create(tmp_path / "p")
    for name in ("red", "green", "blue"):
        p.add_images(make_images(name, 6, seed=1), tags=[name])
    new = {}
    for name in ("red", "green", "blue"):
        for image_id in p.add_images(make_images(name, 2, seed=7)).added:
            new[image_id] = name
    w = LabellerWidget(p, filter="suggested")
    assert "suggested" in w.filter_options
    assert set(w.image_ids) == set(new) and all(it["guess"] is None for it in w.items)
    press(w, action="confirm")  # no model yet: Enter only moves on
    assert w.cursor == 1 and all(not on_disk(p)[i] for i in new)
    p.train(budget="quick", seed=0).wait()
    w.filter = "untagged"
    w.filter = "suggested"  # a fresh walk, now with the model's guesses
    first = w.items[0]
    assert first["guess"] == new[first["id"]]  # colours this clear are guessed right
    assert w.cursor == 0
    press(w, action="confirm")
    assert on_disk(p)[first["id"]] == (new[first["id"]],) and w.cursor == 1
    press(w, action="label", tag="blue")  # a key still overrides the guess
    assert on_disk(p)[w.items[1]["id"]] == ("blue",)
    w.close()
    p.close()


def test_review_view_queues_served_and_tester_images_most_uncertain_first(tmp_path, make_png):
    import json
    import urllib.request

    from jupyter_imgclass.widgets import TesterWidget

    p = ic.Project.create(tmp_path / "p")
    for name in ("red", "green", "blue"):
        p.add_images([make_png(name, seed=s) for s in range(6)], tags=[name])
    it = p.train(budget="quick", seed=0).wait()
    with it.serve() as server:
        for route, seed in (("image", 50), ("image", 51), ("image nostore", 52)):
            request = urllib.request.Request(
                server.routes[route],
                data=make_png("red", seed=seed),
                headers={"Content-Type": "application/octet-stream"},
            )
            with urllib.request.urlopen(request, timeout=30) as answer:
                assert json.loads(answer.read())["predictions"]
    TesterWidget(p).test(make_png("green", seed=60), "tried.png")
    queue = p.review_queue()
    assert len(queue) == 3  # two served (the nostore one is not kept) and the tester's
    assert [e["margin"] for e in queue] == sorted(e["margin"] for e in queue)

    w = LabellerWidget(p, filter="review")
    assert "review" in w.filter_options and len(w.image_ids) == 3
    assert [it["guess"] for it in w.items] == [e["guess"] for e in queue]
    assert "3 served image(s)" in w.status
    first = w.items[0]
    before = p.counts()[first["guess"]]
    press(w, action="confirm")  # Enter: the served guess; the image now trains
    assert on_disk(p)[first["id"]] == (first["guess"],)
    assert p.counts()[first["guess"]] == before + 1
    assert len(p.review_queue()) == 0  # all three are in the project now
    w.close()
    p.close()
