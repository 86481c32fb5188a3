"""`batchrec recommend --repos` with a name MongoDB does not know: reported, and the others still
answered (it used to fail outright). In-process CLI, local deployment, the test MongoDB."""

from pathlib import Path

from batchrec_dagster.cli.commands import main
from batchrec_dagster.deployments import blob_store_for
from batchrec_dagster.settings import Settings
from tests.harness.serving import NAMES, publish


def test_recommend_reports_unknown_names_and_goes_on(local_env: Path, local_settings: Settings, mongo_db,
                                                    capsys) -> None:
    entry = publish(mongo_db, blob_store_for(local_settings), score=0.3)
    mongo_db["repositories"].insert_many([{"_id": 1003, "full_name": NAMES[3]},
                                          {"_id": 1004, "full_name": NAMES[4]}])
    assert main(["recommend", "--repos", f"{NAMES[3]},nobody/nothing,1004", "-k", "5"]) == 0
    out = capsys.readouterr().out
    assert "unknown repositories, ignored: 'nobody/nothing'" in out
    assert "2 of 2 starred repositories known" in out and entry["file_name"] in out
    top = [line for line in out.splitlines() if line.strip()[:3].strip(". ").isdigit()]
    assert len(top) == 5 and not any(NAMES[3] in line or NAMES[4] in line for line in top)
