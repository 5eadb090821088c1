"""The originator's journal: durable ids, dangling intents, torn lines, compaction."""

from __future__ import annotations

import json

from producers.journal import Journal


def test_ids_survive_a_reopen_and_dangling_intents_are_found(tmp_path):
    path = tmp_path / "j"
    j = Journal(path)
    j.record("a", "intent", type="pbx.originate", callback_id="cb-a", server="pbx1")
    j.record("a", "sent")
    j.record("b", "intent", type="pbx.hangup", callback_id="cb-b", server="pbx1")
    j.close()
    again = Journal(path)
    assert "a" in again and "b" in again and "c" not in again
    assert [e.id for e in again.dangling()] == ["b"]
    assert again.dangling()[0].info["callback_id"] == "cb-b"
    again.record("b", "reported")
    again.close()
    assert Journal(path).dangling() == []


def test_a_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "j"
    path.write_text(json.dumps({"id": "a", "state": "sent", "t": 1e9}) + "\n" + '{"id": "b", "sta')
    j = Journal(path, now=1e9)
    assert "a" in j and "b" not in j


def test_compaction_drops_entries_older_than_retention(tmp_path):
    path = tmp_path / "j"
    path.write_text(
        "".join(
            json.dumps({"id": i, "state": "sent", "t": t}) + "\n"
            for i, t in (("old", 1000.0), ("new", 9000.0))
        )
    )
    j = Journal(path, keep_s=5000, now=10000.0)
    assert "new" in j and "old" not in j
    assert "old" not in path.read_text()
