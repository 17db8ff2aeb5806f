import json

from specforge_het.data.conversations import read_conversations


def test_reads_openai_sharegpt_mtbench_and_prompts_and_reports_skips(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"},
                           {"from": "robot", "value": "?"}]},
        {"turns": ["first turn", "second turn"]},
        {"prompt": "just a prompt"},
        {"question": "Natalia sold 48 clips...", "answer": "72"},
        {"messages": [{"role": "user", "content": ""}]},
        {"unrelated": 1},
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    convs, report = read_conversations(path)
    assert convs[0] == rows[0]["messages"]
    assert convs[1] == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert convs[2] == [{"role": "user", "content": "first turn"}]
    assert convs[3] == [{"role": "user", "content": "just a prompt"}]
    assert convs[4] == [{"role": "user", "content": "Natalia sold 48 clips..."}]
    assert len(convs) == 5 and report.read == 5
    assert report.skipped["lines that are not JSON"] == 1
    assert report.skipped["turns with unknown roles"] == 1
    assert report.skipped["rows with no non-empty turn"] == 1  # the row whose only turn is empty is counted too
    assert sum(report.skipped.values()) == 5  # + one empty turn, + one row of no known form
