"""The Train dialog: backbones without weights are greyed out with the reason, options match Project.train."""

from __future__ import annotations

import inspect

from PySide6.QtWidgets import QDialogButtonBox

from artannot.gui.train_dialog import TrainDialog, weights_problem
from artannot.ml.backbones import list_backbones
from artannot.project import METHODS, Project


def test_backbones_without_weights_are_disabled_with_the_reason(qtbot, monkeypatch):
    monkeypatch.setattr("artannot.gui.train_dialog.weights_problem",
                        lambda name: None if name == "efficientnet_lite0" else f"{name} weights not found: put …")
    dialog = TrainDialog(backbone="vgg19")
    qtbot.addWidget(dialog)
    items = dialog.backbone.model()
    for i, name in enumerate(list_backbones()):
        assert items.item(i).isEnabled() == (name == "efficientnet_lite0")
        if name != "efficientnet_lite0":
            assert "weights not found" in items.item(i).toolTip()
    assert dialog.backbone.currentData() == "efficientnet_lite0"  # the asked-for one is unusable
    assert weights_problem("efficientnet_lite0") is None  # the real check: the bundled weights are there


def test_options_are_project_train_arguments(qtbot):
    models = [{"id": 1, "method": "svm", "backbone": "efficientnet_lite0", "top1": 0.8},
              {"id": 2, "method": "linear", "backbone": "efficientnet_lite0", "top1": 0.7}]
    dialog = TrainDialog(models=models)
    qtbot.addWidget(dialog)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert [dialog.method.itemData(i) for i in range(dialog.method.count())] == ["auto", *[
        m for m in METHODS if m != "auto"]]
    assert dialog.options()["method"] == "auto" and dialog.options()["options"]["budget"] == 120.0  # 2 min, as beside the Train button
    dialog.budget.setValue(3)
    assert dialog.options()["options"]["budget"] == 180.0 and ok.isEnabled()

    dialog.method.setCurrentIndex(dialog.method.findData("adaptive"))
    dialog.epochs.setValue(12)
    dialog.then_svm.setChecked(True)
    dialog.lr.setValue(0.0005)
    opts = dialog.options()
    assert opts == {"method": "adaptive", "backbone": "efficientnet_lite0", "epochs": 12, "device": "auto",
                    "then_svm": True, "options": {"low_lr": 0.0005}}
    assert set(opts) <= set(inspect.signature(Project.train).parameters)

    dialog.method.setCurrentIndex(dialog.method.findData("ensemble"))
    assert not ok.isEnabled() and "two" in ok.toolTip()
    dialog.members.item(0).setCheckState(dialog.members.item(0).checkState().Checked)
    dialog.members.item(1).setCheckState(dialog.members.item(1).checkState().Checked)
    assert ok.isEnabled() and dialog.options()["options"] == {"models": [1, 2]}

    dialog.method.setCurrentIndex(dialog.method.findData("baseline"))
    assert not ok.isEnabled()
    dialog.mapping.setText("/tmp/map.json")
    assert ok.isEnabled() and dialog.options()["options"] == {"mapping": "/tmp/map.json"}
    dialog.method.setCurrentIndex(dialog.method.findData("double"))
    assert not ok.isEnabled()


def test_a_detector_result_is_described_by_its_box_map():
    from artannot.gui.train_panel import describe_metrics

    text = describe_metrics(4, {"map": 0.412, "map50": 0.78, "map75": 0.3, "n": 8})
    assert text == "detector 4: test box mAP 41%, AP50 78% (8 images)"
    assert describe_metrics(4, {"map": None, "map50": None, "n": 0}) == "detector 4: no boxed test images to score it"
    assert describe_metrics(5, {"map": 0.5, "n": 3}).startswith("tag model 5")


def test_labels_tag_finetuning_and_method_options_are_reachable_from_the_dialog(qtbot):
    """What `train --labels`, `--method tags --finetune [--intermediate]` and `--option KEY=VALUE` set, the dialog
    sets too; a malformed option keeps Train disabled and says why."""
    dialog = TrainDialog()
    qtbot.addWidget(dialog)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    dialog.method.setCurrentIndex(dialog.method.findData("svm"))
    assert dialog.form.isRowVisible(dialog.labels) and "labels" not in dialog.options()["options"]
    dialog.labels.setCurrentIndex(dialog.labels.findData("curated"))
    dialog.extra.setText("ensemble=1 scale=false gammas=[0.0001] kernel_note=rbf")
    opts = dialog.options()["options"]
    assert opts == {"labels": "curated", "ensemble": 1, "scale": False, "gammas": [0.0001], "kernel_note": "rbf"}
    dialog.extra.setText("ensemble")
    assert not ok.isEnabled() and "KEY=VALUE" in ok.toolTip()
    dialog.extra.clear()
    assert ok.isEnabled()

    dialog.method.setCurrentIndex(dialog.method.findData("tags"))
    assert dialog.form.isRowVisible(dialog.tags_finetune) and not dialog.form.isRowVisible(dialog.labels)
    assert not dialog.form.isRowVisible(dialog.epochs) and "finetune" not in dialog.options()["options"]
    dialog.tags_finetune.setChecked(True)
    assert dialog.form.isRowVisible(dialog.epochs) and dialog.form.isRowVisible(dialog.intermediate.parentWidget())
    dialog.epochs.setValue(4)
    dialog.intermediate.setText("/data/rijks.artannot")
    out = dialog.options()
    assert out["method"] == "tags" and out["epochs"] == 4
    assert out["options"] == {"finetune": True, "intermediate": "/data/rijks.artannot"}
    assert set(out) <= set(inspect.signature(Project.train).parameters)
