"""A run as the results database holds it while it goes (issue 26): opened ``running`` with one
cell_progress row per planned cell, its cells stored one at a time, closed at the end. Written straight
into the database, as the DAG's tasks leave it, for the tests of its readers (the plugin, the CLI, the
history, the nightly skip)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa

from erfnet_tasks.records import CellState, RunStatus
from erfnet_tasks.results import db, publish
from erfnet_tasks.results.models import CellProgress
from tests.helpers.run_documents import make_doc


class RunningRun:
    """``planned``: the run's (target, batch) cells, those in ``aoe`` tuned by AOE; ``store`` takes
    make_doc's cells (target, batch, miou or None, fps or None, perf status)."""

    def __init__(
        self,
        url: str,
        run_id: str,
        started_at: str,
        cann: str | None,
        planned: list[tuple[str, int]],
        aoe: Iterable[tuple[str, int]] = (),
    ):
        self.url, self.run_id, self.started_at, self.cann = url, run_id, started_at, cann
        self.planned, self.aoe = list(planned), set(aoe)
        self.cells: list[tuple] = []

    def document(self, status: str = RunStatus.RUNNING) -> dict:
        doc = make_doc(self.run_id, self.started_at, self.cann, self.cells, status=status)
        if status == RunStatus.RUNNING:
            doc["run"]["finished_at"] = None
        return doc

    def open(self) -> RunningRun:
        publish.publish_run(self.document(), self.url)
        now = datetime.now(UTC)
        with db.session_scope(self.url) as session:
            for target, batch in self.planned:
                session.add(
                    CellProgress(
                        run_id=self.run_id,
                        target=target,
                        batch_size=batch,
                        chip=target,
                        backend="stand-in",
                        aoe=(target, batch) in self.aoe,
                        state=CellState.QUEUED.value,
                        updated_at=now,
                    )
                )
        return self

    def set_state(
        self, target: str, batch: int, state: CellState, host: str | None = None, try_number: int | None = None
    ) -> None:
        with db.session_scope(self.url) as session:
            session.execute(
                sa.update(CellProgress)
                .where(
                    CellProgress.run_id == self.run_id,
                    CellProgress.target == target,
                    CellProgress.batch_size == batch,
                )
                .values(state=state.value, host=host, try_number=try_number, updated_at=datetime.now(UTC))
            )

    def store(self, *cells: tuple) -> None:
        """The cells measured: their rows written (the run's document again, still running), their progress stored."""
        self.cells.extend(cells)
        publish.publish_run(self.document(), self.url)
        for target, batch, *_rest in cells:
            self.set_state(target, batch, CellState.STORED, host="npu-host")

    def close(self, status: str = RunStatus.COMPLETE) -> None:
        publish.publish_run(self.document(status), self.url)
