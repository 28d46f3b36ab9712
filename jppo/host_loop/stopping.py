"""How a host run stops, for ``jppo.host_loop.driver.HostRun``: a fault, divergence, Ctrl-C or
SIGTERM ends the run with one sentence after saving every behavior that progressed since its
last checkpoint (unless its state went bad), and in a run of several processes every process
learns of it at the next meeting (``jppo.host_loop.meeting``) instead of hanging in the next
collective."""
from __future__ import annotations

import jax

from jppo.errors import RunFault
from jppo.host_loop import meeting
from jppo.host_loop.faults import Interrupted, Stop
from jppo.runs import report


class Stopping:
    """The stopping half of ``HostRun`` (it reads the run's learners, display and settings)."""

    def _status(self, stop: Stop | None = None, code: int = meeting.READY) -> meeting.Status:
        """This process's report for a meeting (FAULT with ``stop``); hands its episodes over."""
        local = sum(learner.local_steps for learner in self.learners.values())
        if stop is None:
            status = meeting.Status(code, steps=local, sums=self.unsent)
        else:
            status = meeting.Status(meeting.FAULT, stop.code, stop.cause, stop.diverged,
                                    local, self.unsent)
        self.unsent = meeting.EpisodeSums()
        return status

    def _meet(self, status: meeting.Status) -> list[meeting.Status]:
        """Exchange statuses with every process: the run's step count and episodes; a process
        that stopped stops every process (``RunFault`` or ``KeyboardInterrupt``)."""
        self.in_collective = True
        statuses = meeting.exchange(status)
        self.in_collective = False
        (learner,) = self.learners.values() or (None,)
        if learner is not None:
            learner.steps = learner.start_step + sum(s.steps for s in statuses)
            for s in statuses:
                learner.period.sums.merge(s.sums)
        stopped = meeting.first_stop(statuses)
        if stopped is None:
            return statuses
        i, s, cause = stopped
        if s.code == meeting.INTERRUPTED:
            self._note_interrupted(None if i == jax.process_index() else i)
            raise Interrupted
        raise RunFault(self._stop_note(cause, s.diverged), s.exit_code)

    def _stopped(self, stop: Stop) -> None:
        if self.processes == 1:
            raise RunFault(self._stop_note(stop.cause, stop.diverged), stop.code) from None
        self._meet(self._status(stop))  # raises for every process

    def _interrupted(self, stop: KeyboardInterrupt) -> None:
        """Ctrl-C or SIGTERM: save (process 0) and tell the other processes, unless it came in
        the middle of a collective, which the others cannot finish without this process."""
        self._what = getattr(stop, "what", "interrupted")
        stop.noted = True
        if self.processes == 1:
            self._note_interrupted(None)
        elif self.in_collective:
            self.display.note(f"interrupted in the middle of an update; the other processes "
                              f"stop when jax.distributed sees this one gone. Continue with "
                              f"--resume from the last checkpoint (step {max(self._saved_at(), 0)}).")
        else:
            try:
                self._meet(self._status(code=meeting.INTERRUPTED))
            except Interrupted:
                pass

    def _save_progressed(self, diverged: bool) -> bool:
        """A checkpoint of every behavior that progressed since its last and is consistent;
        whether one was written."""
        saved = False
        for learner in self.learners.values():
            if not diverged and learner.progressed() and learner.consistent():
                self._save(learner)
                saved = True
        return saved

    def _note_interrupted(self, by: int | None) -> None:
        what = "interrupted" if by is not None else self._what
        if self.inference:
            note = "inference writes nothing."
        elif self._save_progressed(False):
            note = "checkpoint saved. Continue with --resume."
        elif self._saved_at() >= 0:
            note = (f"the checkpoints ({self._saved_steps_text()}) stand." if self.several else
                    f"the checkpoint of step {self._saved_at()} stands.") + " Continue with --resume."
        else:
            note = "nothing to save yet."
        who = "" if by is None else f"process {by} was interrupted; "
        self.display.note(f"{who}{what} at step {self._steps_text()}; {note}")

    def _steps_text(self) -> str:
        """The run's step count, with each behavior's where it trains several."""
        if not self.several:
            return str(self.steps)
        return f"{self.steps} ({', '.join(f'{l.name} {l.steps}' for l in self.learners.values())})"

    def _saved_steps_text(self) -> str:
        """Each behavior's last checkpoint, in a run of several."""
        return ", ".join(f"{l.name} at step {l.saved_at}" for l in self.learners.values()
                         if l.saved_at >= 0)

    def _stop_note(self, cause: str, diverged: bool) -> str:
        """The stop's sentence; saves a checkpoint first where the run progressed since the
        last and the train state is consistent."""
        if self.inference:
            return f"{cause}; inference stopped at step {self._steps_text()}, nothing written."
        saved_now = self._save_progressed(diverged)
        return report.stop_note(cause, self.settings.run_id, self._steps_text(),
                                self._saved_at(), saved_now,
                                self.several and self._saved_steps_text())


__all__ = ["Stopping"]
