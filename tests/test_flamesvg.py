"""The static SVG flame graph (--flops-flamegraph writes one beside each folded file)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from pytest_flops.outputs.flamegraph import filename_for, write_flamegraphs
from pytest_flops.outputs.flamesvg import MIN_WIDTH, WIDTH, render_flame_svg

NS = "{http://www.w3.org/2000/svg}"


def frames(svg: str) -> dict[str, dict[str, float | str]]:
    """{frame name: {x, y, width, title, text}} of every drawn frame."""
    out = {}
    for g in ET.fromstring(svg).iter(NS + "g"):
        title = g.find(NS + "title").text
        rect = g.find(NS + "rect")
        text = g.find(NS + "text")
        name = title.rsplit(": ", 1)[0]
        out[name] = {"x": float(rect.get("x")), "y": float(rect.get("y")), "width": float(rect.get("width")),
                     "title": title, "text": text.text if text is not None else ""}
    return out


def test_widths_follow_the_flops_and_callees_sit_above_their_callers() -> None:
    svg = render_flame_svg({"Net;fc1;aten.mm": 300, "Net;fc2;aten.mm": 100, "Net;aten.add": 0}, "test_a.py::test_x")
    drawn = frames(svg)
    assert set(drawn) == {"all", "Net", "fc1", "fc2", "aten.mm"}  # aten.add spent nothing: no frame
    assert drawn["Net"]["width"] == drawn["all"]["width"] == WIDTH - 20
    assert abs(drawn["fc1"]["width"] - 3 * drawn["fc2"]["width"]) < 0.2
    assert drawn["fc2"]["x"] > drawn["fc1"]["x"]
    assert drawn["all"]["y"] > drawn["Net"]["y"] > drawn["fc1"]["y"] > drawn["aten.mm"]["y"]  # root at the bottom
    assert drawn["fc1"]["title"] == "fc1: 300 FLOPs (75.00%)"
    assert drawn["fc1"]["text"] == "fc1"
    root = ET.fromstring(svg)
    assert root.find(NS + "title").text == "test_a.py::test_x"
    assert "400 FLOPs" in "".join(t.text or "" for t in root.iter(NS + "text"))


def test_labels_are_cut_to_the_frame_and_names_are_escaped() -> None:
    long = "encoder.layers.0.self_attention.output_projection"
    svg = render_flame_svg({f"M<&>;encoder;encoder.layers.0;{long};aten.mm": 10, "M<&>;head;aten.mm": 10 ** 6},
                           "test_<x>.py::test_&")
    drawn = frames(svg)  # parses: the names were escaped
    assert "M<&>" in drawn and ET.fromstring(svg).find(NS + "title").text == "test_<x>.py::test_&"
    # 10 FLOPs of 1,000,010 are far narrower than MIN_WIDTH pixels: not drawn, their FLOPs stay in the root's width
    assert long not in drawn and "encoder" not in drawn
    assert drawn["head"]["width"] > WIDTH - 30 and MIN_WIDTH < 1


def test_a_label_too_long_for_its_frame_shows_the_part_below_its_parent() -> None:
    long = "blocks.0.attention"
    drawn = frames(render_flame_svg({f"Net;blocks.0;{long};aten.bmm": 5, "Net;big;aten.mm": 60}, "t"))
    text = drawn[long]["text"]
    assert text == "attention"


def test_nothing_counted_still_gives_a_valid_picture() -> None:
    root = ET.fromstring(render_flame_svg({}, "test_empty"))
    assert "no FLOPs counted" in "".join(t.text or "" for t in root.iter(NS + "text"))
    assert not list(root.iter(NS + "g"))


def test_write_flamegraphs_puts_an_svg_beside_each_folded_file(tmp_path: Path) -> None:
    records = [{"nodeid": "t.py::test_a", "measurements": [{"name": "Net", "stacks": {"Net;fc;aten.mm": 8}}]},
               {"nodeid": "t.py::test_b", "measurements": [{"name": "A", "stacks": {"A;aten.mm": 2}},
                                                             {"name": "B", "stacks": {"B;aten.mm": 6}}]}]
    written = write_flamegraphs(records, tmp_path)
    assert [p.name for p in written] == [filename_for("t.py::test_a"), filename_for("t.py::test_b"),
                                         filename_for("t.py::test_a", ".svg"), filename_for("t.py::test_b", ".svg")]
    drawn = frames((tmp_path / filename_for("t.py::test_b", ".svg")).read_text(encoding="utf-8"))
    assert drawn["[2]"]["width"] == 3 * drawn["[1]"]["width"]  # two measurements: one frame each, as in the folded file
    assert not write_flamegraphs(records[:1], tmp_path / "only", svg=False)[0].name.endswith(".svg")
