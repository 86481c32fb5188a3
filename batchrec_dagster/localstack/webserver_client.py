"""What `batchrec prod-stack` asks dagster-webserver over GraphQL, as Dagit does: is the stack
ready, are the declared pools configured, and terminating the runs in progress on shutdown."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

NEEDED_DAEMONS = {"SCHEDULER", "SENSOR", "BACKFILL", "QUEUED_RUN_COORDINATOR"}
IN_PROGRESS = ["STARTING", "STARTED", "CANCELING"]


class WebserverError(RuntimeError):
    """The webserver answered with GraphQL errors."""


class WebserverClient:
    def __init__(self, url: str):
        self.url = url

    def graphql(self, query: str, variables: dict[str, Any] | None = None, timeout_s: float = 30) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.load(response)
        if answer.get("errors"):
            raise WebserverError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def ready(self, location: str) -> bool:
        """The code location is loaded and the daemons that run schedules, sensors, backfills and
        the run queue report healthy; False while the webserver does not answer yet."""
        try:
            data = self.graphql("""{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
                locationOrLoadError { __typename } } } }
                instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }""", timeout_s=10)
        except (OSError, urllib.error.URLError):
            return False
        entries = data["workspaceOrError"].get("locationEntries", [])
        entry = next((e for e in entries if e["name"] == location), None)
        # a PythonError here may be the code server still loading; a real one shows in its log
        if entry is None or entry["loadStatus"] != "LOADED" or \
                (entry["locationOrLoadError"] or {}).get("__typename") != "RepositoryLocation":
            return False
        statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        return NEEDED_DAEMONS <= {d["daemonType"] for d in statuses if d["healthy"]}

    def reload_location(self, location: str) -> bool:
        """Dagit's Reload button: True once the webserver has loaded `location` from its code
        server again. The webserver does not reload a location whose server was restarted by
        itself; without this it answers "Could not find job" until someone clicks Reload. (The
        daemon reloads its own view within a minute.)"""
        try:
            data = self.graphql("""mutation R($name: String!) {
                reloadRepositoryLocation(repositoryLocationName: $name) { __typename
                    ... on WorkspaceLocationEntry { loadStatus locationOrLoadError { __typename } } } }""",
                                {"name": location}, timeout_s=120)
        except (OSError, WebserverError):  # not answering yet, or answering with an error: retry later
            return False
        entry = data["reloadRepositoryLocation"]
        return entry["__typename"] == "WorkspaceLocationEntry" and entry["loadStatus"] == "LOADED" and \
            (entry["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"

    def configure_pools(self) -> dict[str, int]:
        """Give every pool the code declares and the instance has no limit for the instance's
        default limit, now; returns what it set.

        Why: the run queue reads the configured pools before it creates a missing one from
        `default_limit`, so in the first dequeue pass that sees a pool it does not enforce it. On a
        new database, two training runs queued together (a backfill as the first action) would
        both start.
        """
        data = self.graphql("""{ assetNodes { pools } instance { concurrencyLimits { concurrencyKey }
            poolConfig { defaultPoolLimit } } }""")
        declared = {pool for node in data["assetNodes"] for pool in node["pools"]}
        configured = {c["concurrencyKey"] for c in data["instance"]["concurrencyLimits"]}
        limit = (data["instance"]["poolConfig"] or {}).get("defaultPoolLimit")
        if limit is None:
            return {}
        for pool in sorted(declared - configured):
            self.graphql("""mutation P($key: String!, $limit: Int!) {
                setConcurrencyLimit(concurrencyKey: $key, limit: $limit) }""", {"key": pool, "limit": limit})
        return dict.fromkeys(sorted(declared - configured), limit)

    def runs(self, statuses: list[str]) -> list[str]:
        data = self.graphql("""query R($statuses: [RunStatus!]) { runsOrError(filter: {statuses: $statuses}) {
            ... on Runs { results { runId } } } }""", {"statuses": statuses})
        return [r["runId"] for r in data["runsOrError"].get("results", [])]

    def terminate(self, run_ids: list[str], policy: str) -> None:
        self.graphql("""mutation T($ids: [String!]!, $policy: TerminateRunPolicy) {
            terminateRuns(runIds: $ids, terminatePolicy: $policy) { __typename } }""",
                     {"ids": run_ids, "policy": policy})

    def cancel_runs_in_progress(self, timeout_s: float = 60.0) -> list[str]:
        """Terminate the runs in progress as Dagit's Terminate button does and wait until they
        are canceled; a run whose worker does not stop in time is marked canceled all the same."""
        in_progress = self.runs(IN_PROGRESS)
        if not in_progress:
            return []
        self.terminate(in_progress, "SAFE_TERMINATE")
        deadline = time.monotonic() + timeout_s
        while (left := self.runs(IN_PROGRESS)) and time.monotonic() < deadline:
            time.sleep(1)  # poll interval
        if left:
            self.terminate(left, "MARK_AS_CANCELED_IMMEDIATELY")
        return in_progress
