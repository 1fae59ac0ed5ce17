"""The study specs committed in docs/studies: each loads, names its own file, and every budgeted method
reaches each budget on exactly the rows its baseline adapts (a study whose methods adapt different rows
compares nothing)."""

from pathlib import Path

import pytest

from surmlab.methods import method_info, prepare
from surmlab.models import load_backbone
from surmlab.study import StudySpec

SPECS = sorted((Path(__file__).resolve().parents[1] / "docs" / "studies").glob("*.yaml"))


def test_the_committed_specs_are_found():
    assert len(SPECS) >= 6


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_a_committed_spec_adapts_its_baselines_rows_at_every_budget(path):
    spec = StudySpec.load(path)
    assert spec.name == path.stem, f"{path.name} names its study {spec.name!r}"
    assert f"surmlab study docs/studies/{path.name}" in path.read_text().splitlines()[0]
    for budget in spec.budgets:
        targets = {}
        for method in [m for m in spec.methods if spec.sized(m)]:
            backbone = load_backbone(spec.backbone, 2, pretrained=False)
            mode = method_info(method).mode_for(spec.mode)
            prepared = prepare(method, backbone.model, head=backbone.head, mode=mode, budget=budget)
            targets[method] = prepared.targets
        rows = targets[spec.baseline]
        assert rows, f"{spec.baseline} adapts nothing at {budget}"
        assert {m: t for m, t in targets.items() if t != rows} == {}, f"{spec.baseline} adapts {rows} at {budget}"
