"""metrics.jsonl records carry the run's wall time, added up across resumes."""

import json
import os
import time

from flax_s2s.logs import MetricsWriter


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]  # every line whole


def test_wall_time_grows_and_starts_at_the_process_start(tmp_path):
    started = time.time() - 30.0  # as if data preparation had taken 30 s
    writer = MetricsWriter(str(tmp_path), start_time=started)
    writer.write(100, "train", {"loss": 1.0})
    time.sleep(0.05)
    writer.write(200, "train", {"loss": 0.5})
    writer.close()
    first, second = _records(str(tmp_path))
    assert 30.0 <= first["wall_s"] < 40.0
    assert second["wall_s"] >= first["wall_s"] + 0.04


def test_resumed_run_counts_on_from_the_restored_step(tmp_path):
    path = os.path.join(tmp_path, "metrics.jsonl")
    with open(path, "w") as f:
        for step, wall_s in ((100, 50.0), (200, 90.0), (300, 130.0)):
            f.write(json.dumps({"step": step, "split": "train", "wall_s": wall_s}) + "\n")
        f.write('{"step": 400, "split": "tr')  # cut short by a kill
    # The checkpoint restored is step 200: the later records belong to the lost tail.
    writer = MetricsWriter(str(tmp_path), resume_step=200)
    writer.write(300, "train", {"loss": 0.1})
    writer.close()
    with open(path) as f:
        lines = f.read().splitlines()
    assert lines[-2] == '{"step": 400, "split": "tr'
    assert 90.0 <= json.loads(lines[-1])["wall_s"] < 100.0


def test_fresh_run_ignores_an_old_file(tmp_path):
    path = os.path.join(tmp_path, "metrics.jsonl")
    with open(path, "w") as f:
        f.write(json.dumps({"step": 100, "split": "train", "wall_s": 500.0}) + "\n")
    writer = MetricsWriter(str(tmp_path), resume_step=0)
    writer.write(100, "train", {"loss": 0.1})
    writer.close()
    assert _records(str(tmp_path))[-1]["wall_s"] < 10.0

