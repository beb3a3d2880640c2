"""The package root's helpers build each widget from a real project, run or iteration."""

from __future__ import annotations

import jupyter_imgclass as ic
from jupyter_imgclass import widgets


def test_the_classes_are_exported_from_the_package_root():
    for name in widgets.__all__:
        assert getattr(ic, name) is getattr(widgets, name) and name in ic.__all__


def test_helpers_build_the_widgets_over_a_real_project(tmp_path, make_images):
    p = ic.Project.create(tmp_path / "p")
    p.add_images(make_images("red", 4), tags=["red"])
    p.add_images(make_images("blue", 4, seed=1), tags=["blue"])
    p.add_images(make_images("green", 2, seed=2))
    run = p.train(budget="advanced", model="small_cnn", epochs=1, input_size=16)

    monitor = ic.monitor(run)
    assert isinstance(monitor, ic.TrainingMonitor) and monitor.run is run
    iteration = run.wait(timeout=600)

    labeller = ic.labeller(p, filter="all", page_size=4, mode="single")
    assert isinstance(labeller, ic.LabellerWidget) and labeller.project is p
    assert (labeller.filter, labeller.page_size, labeller.mode) == ("all", 4, "single")
    assert ic.labeller(p).total == 2  # "untagged" by default: the two green images

    follows = ic.tester(p)  # a project's tester follows its latest iteration
    assert isinstance(follows, ic.TesterWidget) and follows.project is p and not follows._fixed
    assert follows.iteration.number == iteration.number
    fixed = ic.tester(iteration)  # an iteration's: its project's tester, fixed to it
    assert fixed.project is p and fixed._fixed and fixed.iteration is iteration

    report = ic.report(iteration)
    assert isinstance(report, ic.EvaluationWidget) and report.iteration is iteration

    checked = ic.data_check(p)  # runs project.check() itself
    given = p.check()
    assert isinstance(checked, ic.DataCheckWidget) and checked.report == given
    assert given.summary() in checked.summary.value
    assert ic.data_check(p, given).report is given

    for w in (monitor, labeller, follows, fixed, report, checked):
        w.close()
    p.close()
