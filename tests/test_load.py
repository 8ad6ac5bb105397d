"""Eight studio sessions at once on 127.0.0.1, through the Gradio client.

Each session breeds and evaluates a tiny child. The heavy-job queue runs them one at a time and
shows every waiting session its position; sessions never see each other's parents, children,
files or token; session folders are deleted when sessions expire; memory returns to about its
starting level.
"""

import re
import threading
import time
from pathlib import Path

import pytest

from darwin_core.genome import GENE_NAMES, Genome
from studio_server import StudioServer

pytestmark = pytest.mark.browser

SESSIONS = 8
TTL_SECONDS = 30
PAIRS = [("embedded:tiny-arith", "embedded:tiny-reverse"), ("embedded:tiny-reverse", "embedded:tiny-arith")]
SENTINEL = "hf_loadtest_sentinel_do_not_log_0123456789"


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024


def test_eight_concurrent_sessions(tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    sessions_dir = tmp_path / "sessions"
    server = StudioServer(sessions_dir, tmp_path / "server.log", env={"DARWIN_SESSION_TTL": str(TTL_SECONDS)}).start()
    try:
        # Warm-up session: loads the libraries and scans the pair once, so the baseline is steady.
        warm = Client(server.url, verbose=False)
        warm.predict(PAIRS[0][0], PAIRS[0][1], "", "none", 0.8, api_name="/check_parents")
        warm.close()
        baseline = rss_mb(server.process.pid)

        genes = [getattr(Genome(), name) for name in GENE_NAMES]
        results: dict[int, dict] = {}
        ranks: dict[int, list] = {}

        def run(index: int) -> None:
            father, mother = PAIRS[index % 2]
            client = Client(server.url, verbose=False)
            client.predict(father, mother, "", "none", 0.8, api_name="/check_parents")
            try:
                # The Hub is out of reach in the tests; what matters is that the token leaks nowhere.
                client.predict(SENTINEL, "", api_name="/token_status")
            except AppError as error:
                assert SENTINEL not in str(error)
            job = client.submit(["tiny"], index, "darwin", 0.5, 1.0, *([1.0] * 5), *genes, api_name="/breed")
            seen = []
            while not job.done():
                status = job.status()
                if status.rank is not None:
                    seen.append(status.rank)
                time.sleep(0.2)
            ranks[index] = seen
            status, table, note, verdict, _, card = job.result()
            results[index] = {"father": father, "mother": mother, "status": status, "table": table, "verdict": verdict, "card": card}
            client.close()

        threads = [threading.Thread(target=run, args=(index,)) for index in range(SESSIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=1200)

        assert sorted(results) == list(range(SESSIONS)), "every session finished"
        assert any(rank and max(rank) > 0 for rank in ranks.values()), "queued sessions saw their position"
        for index, result in results.items():
            models = [row[1] for row in result["table"]["data"]]
            assert models == [result["father"], result["mother"], "child"], f"session {index} saw {models}"
            assert "Health:" in result["verdict"]
            assert f"--seed {index}" in result["card"], f"session {index} got another session's child"

        session_folders = [path for path in sessions_dir.iterdir() if path.is_dir()]
        assert len(session_folders) >= SESSIONS
        for folder in session_folders:
            for path in folder.rglob("*"):
                if path.is_file() and path.suffix in (".json", ".md", ".txt"):
                    assert SENTINEL not in path.read_text(errors="ignore"), path
        assert SENTINEL not in (tmp_path / "server.log").read_text(errors="ignore")

        # Sessions expire after the TTL; their folders and loaded models go with them.
        deadline = time.time() + TTL_SECONDS * 6
        while time.time() < deadline and any(path.exists() for path in session_folders):
            time.sleep(2)
        assert [path for path in session_folders if path.exists()] == []
        after = rss_mb(server.process.pid)
        assert after < baseline + 400, f"server memory went from {baseline:.0f} MB to {after:.0f} MB after the sessions ended"
    finally:
        server.stop()
