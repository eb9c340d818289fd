"""`staredge models` lists the language-model families (STAR genome, baselines, LFM2 sizes)
with parameters and decode state, in the table and in --json."""

from __future__ import annotations

import json

from staredge.cli import main


def test_models_json_and_table_list_lm_families(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["lm_families"]}
    assert {"star_lm_pydoc", "transformer_pp", "striped_mamba", "lfm2-350m"} <= set(rows)
    lfm = rows["lfm2-350m"]
    assert lfm["dim"] == 1024 and lfm["vocab_size"] == 65536 and lfm["params_with_embeddings"] == 354_483_968
    assert rows["star_lm_pydoc"]["params"] == 1_281_664 and all(r["state_bytes"] > 0 for r in rows.values())
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "Language-model families" in out and "lfm2-350m" in out and "354,483,968" in out
