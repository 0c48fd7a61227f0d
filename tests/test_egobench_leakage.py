"""Leakage report: training video ids (EgoIT, EgoClip) that also occur in EgoBench sources."""

from __future__ import annotations

import json

# Fixture writers of the sibling test modules (pytest puts tests/ on the import path).
from test_egobench import write_egoschema, write_qaego4d
from test_egoclip import write_egoclip
from test_egoit import write_egotimeqa

from datasets_scripts.egobench.build import build_egobench
from datasets_scripts.egoclip.build import build_egoclip
from datasets_scripts.egoit.build import build_egoit


def test_leakage_report_lists_shared_ids(tmp_path):
    # EgoTimeQA clip "clip-aaa" is also a QAEgo4D clip; an EgoClip video is EgoSchema's source video.
    egotimeqa = tmp_path / "egotimeqa"
    write_egotimeqa(egotimeqa)
    records = json.loads((egotimeqa / "data/unified/annotations.EgoTimeQA.json").read_text())
    records[1]["video_id"] = "clip-aaa"
    (egotimeqa / "data/unified/annotations.EgoTimeQA.json").write_text(json.dumps(records))
    build_egoit({"egotimeqa": egotimeqa}, tmp_path / "egoit")
    egoclip = tmp_path / "egoclip_src"
    write_egoclip(egoclip)
    text = (
        (egoclip / "egoclip.csv")
        .read_text()
        .replace("002d2729-df71-438d-8396-5895b349e8fd", "2fa72a4f-b318-4e04-97b8-efdc3b039258")
    )
    (egoclip / "egoclip.csv").write_text(text)
    build_egoclip(egoclip, tmp_path / "egoclip")

    roots = {"egoschema": tmp_path / "egoschema", "qaego4d": tmp_path / "qaego4d"}
    write_egoschema(roots["egoschema"])
    write_qaego4d(roots["qaego4d"])
    # Ego4D metadata maps the other EgoTimeQA clip to EgoSchema's video: caught only through the map.
    ego4d_json = tmp_path / "ego4d.json"
    ego4d_json.write_text(
        json.dumps(
            {
                "videos": [],
                "clips": [{"clip_uid": "0a1b2c3d-clip", "video_uid": "2fa72a4f-b318-4e04-97b8-efdc3b039258"}],
            }
        )
    )
    out = tmp_path / "bench"
    info = build_egobench(
        roots, out, leakage_against=[tmp_path / "egoit", tmp_path / "egoclip"], ego4d_metadata=ego4d_json
    )

    report = json.loads((out / "leakage_report.json").read_text())
    pairs = {(p["train"], p["bench"], p["namespace"]): p for p in report["pairs"]}
    assert pairs[("egoit/egotimeqa", "qaego4d_closed", "ego4d_clip")]["ids"] == ["clip-aaa"]
    assert pairs[("egoit/egotimeqa", "qaego4d_open", "ego4d_clip")]["overlap"] == 1
    assert pairs[("egoclip/egoclip", "egoschema_full", "ego4d_video")]["ids"] == [
        "2fa72a4f-b318-4e04-97b8-efdc3b039258"
    ]
    assert pairs[("egoit/egotimeqa", "egoschema_subset", "ego4d_video")]["ids"] == [
        "2fa72a4f-b318-4e04-97b8-efdc3b039258"
    ]
    assert not any(p["train"] == "egoit/all" for p in report["pairs"])  # aggregate configs have no files of their own
    assert len(info["leakage_pairs"]) == len(report["pairs"])
    assert "## Leakage" in (out / "README.md").read_text() and "egoit/egotimeqa" in (out / "README.md").read_text()

    # Without the clip -> video map the EgoTimeQA/EgoSchema overlap is invisible (different id namespaces).
    build_egobench(roots, tmp_path / "bench2", leakage_against=[tmp_path / "egoit"])
    report = json.loads((tmp_path / "bench2" / "leakage_report.json").read_text())
    assert {p["namespace"] for p in report["pairs"]} == {"ego4d_clip"}
