"""``multiloss sweep SWEEP.yaml``: an Optuna study whose trials are ordinary runs.

* The sweep folder (``output_dir/name``) holds ``sweep.yaml`` (the sweep, resolved), the study
  (``study.db``, SQLite, unless ``storage:`` names another), ``trial-NNNN/`` (one run folder per
  trial, written by ``multiloss train`` itself), ``logs/trial-NNNN.log`` (each trial's output),
  ``trials.csv``, ``summary.md`` and ``pareto.png`` (:mod:`multiloss.run.sweep_report`).
* Each trial is a ``multiloss train RUN --set ...`` process: the sweep's ``set:``, then the
  sampled values.  Up to ``--workers`` of them run at once; this process alone asks the study for
  trials and tells it their results, and it takes a lock on the sweep folder around each ask, so
  that several ``multiloss sweep`` processes on one study (``--resume`` on a running sweep, or
  several machines sharing the folder) run exactly ``trials`` trials between them.
* A trial's objectives are the final model's values in its ``metrics.json`` (``val_x`` from the
  validation split, ``x`` from the train split).  With one objective, each epoch's value in
  ``history.json`` is reported to the trial as it is written, and a trial Optuna's median pruner
  stops is ended (its folder kept, resumable with ``multiloss train --resume``).
* A trial that fails (a NaN: the guard's message; a bad sampled config; a process killed, SIGKILL
  included) is recorded as failed with the reason, its folder kept, and the sweep goes on.
  ``--resume`` continues the study; trials left running by a sweep that was stopped are marked
  failed first.

Optuna does the sampling (TPE for one objective, NSGA-II for several), the pruning and the storage.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..spec.errors import RunError, SpecError
from ..spec.validation import Problems, did_you_mean
from .rundir import RunDir
from .sweep_config import Sweep, enqueued_points, load_sweep, trial_name
from .sweep_space import sample

POLL_SECONDS = 0.5
#: The states of a trial that has ended (Optuna's TrialState names).
FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")
#: A trial asked for but never given a process (its sweep was killed in between) is stale after this long.
ORPHAN_SECONDS = 60


def optuna():
    """Optuna, quiet (its INFO line per trial would drown the sweep's own)."""
    import optuna as module

    module.logging.set_verbosity(module.logging.WARNING)
    return module


# --- the study --------------------------------------------------------------------------------

def storage_of(sweep: Sweep, folder: Path):
    """The Optuna storage: SQLite in the sweep folder, the sweep's SQLAlchemy URL, or a journal file."""
    opt = optuna()
    spec = sweep.config.storage
    if spec is not None and spec.journal is not None and journal_problem(sweep):
        raise sweep.error([(("storage", "journal"), journal_problem(sweep))])
    try:
        if spec is not None and spec.journal is not None:
            from optuna.storages.journal import JournalFileBackend

            return opt.storages.JournalStorage(JournalFileBackend(str(sweep.relative_file(spec.journal))))
        url = sweep.storage_url() if spec is not None else f"sqlite:///{(folder / 'study.db').resolve()}"
        kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
        return opt.storages.RDBStorage(url, engine_kwargs=kwargs)
    except (ImportError, ValueError, OSError) as exc:     # a driver not installed, a URL not understood
        raise sweep.error([(("storage",), f"Optuna cannot open the storage: {exc}")]) from None
    except Exception as exc:     # SQLAlchemy's own errors (a server that does not answer, a refused login)
        raise sweep.error([(("storage",), f"Optuna cannot open the storage: {type(exc).__name__}: "
                                          f"{str(exc).splitlines()[0]}")]) from None


def journal_problem(sweep: Sweep) -> str | None:
    """Why the journal file's folder cannot hold it (it must exist: a folder every process of the sweep
    reaches, not one a typo would create), or None."""
    folder = sweep.relative_file(sweep.config.storage.journal).parent
    if not folder.is_dir():
        return (f"the journal's folder {folder} does not exist; create it (a folder every process of the "
                "sweep can reach) or give a path in an existing one")
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the journal's folder {folder} is not writable"
    return None


def storage_problems(sweep: Sweep) -> Problems:
    """What ``validate`` finds wrong with ``storage:`` without creating anything: a journal folder that
    does not exist; a URL SQLAlchemy cannot read, whose driver is not installed, or (a server) that does
    not answer; a SQLite file in a folder that does not exist."""
    spec = sweep.config.storage
    if spec is None:
        return []
    if spec.journal is not None:
        problem = journal_problem(sweep)
        return [(("storage", "journal"), problem)] if problem else []
    import sqlalchemy

    where = ("storage",)
    try:
        url = sqlalchemy.engine.make_url(sweep.storage_url())
    except sqlalchemy.exc.ArgumentError as exc:
        return [(where, f"not a SQLAlchemy URL ({exc}); give e.g. postgresql://user@host/db, "
                        "sqlite:///path/study.db or {journal: FILE}")]
    backends = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")
    if url.get_backend_name() not in backends:
        try:
            url.get_dialect()
        except sqlalchemy.exc.NoSuchModuleError:
            return [(where, f"SQLAlchemy has no database {url.get_backend_name()!r}; "
                            f"{did_you_mean(url.get_backend_name(), backends)}give e.g. postgresql://user@host/db, "
                            "sqlite:///path/study.db or {journal: FILE}")]
    if url.get_backend_name() == "sqlite":
        database = Path(url.database or "")
        if url.database and not database.parent.is_dir():
            return [(where, f"the SQLite file's folder {database.parent} does not exist (a relative "
                            "sqlite:/// path is relative to the sweep file)")]
        return []
    try:
        timeout = {"connect_timeout": 10} if url.get_backend_name() in ("postgresql", "mysql") else {}
        engine = sqlalchemy.create_engine(url, connect_args=timeout)
        with engine.connect():
            pass
        engine.dispose()
    except ImportError as exc:
        return [(where, f"the database driver is not installed: {exc}")]
    except Exception as exc:     # SQLAlchemy's own errors: no answer, a refused login, an unknown database
        return [(where, f"cannot connect: {type(exc).__name__}: {str(exc).splitlines()[0]}")]
    return []


def session_seed(seed: int, session: int) -> int:
    """The sampler's seed in the ``session``-th process to open a study (0: the one that created it,
    seeded with the sweep's ``seed``).  A resumed or joining process must not replay the first one's
    draws, or its trials repeat points already tried (a sampler's random phase: TPE's startup trials,
    NSGA-II's first generation); each session's seed is its own, and as reproducible as the first."""
    import numpy as np

    return seed if session == 0 else int(np.random.SeedSequence([seed, session]).generate_state(1)[0])


def sampler_of(sweep: Sweep, session: int = 0):
    """Optuna's sampler: TPE for one objective and NSGA-II for several (``auto``), or the one named;
    seeded for the ``session``-th process on the study (:func:`session_seed`)."""
    opt = optuna()
    cfg, seed = sweep.config.sampler, session_seed(sweep.config.seed, session)
    name = cfg.name if cfg.name != "auto" else ("tpe" if len(sweep.objectives) == 1 else "nsga2")
    params = dict(cfg.params)
    if name == "nsga2" and "population_size" not in params:
        params["population_size"] = max(4, min(50, sweep.config.trials // 4))   # a few generations
    kinds = {"tpe": opt.samplers.TPESampler, "nsga2": opt.samplers.NSGAIISampler,
             "random": opt.samplers.RandomSampler}
    try:
        return kinds[name](seed=seed, **params)
    except (TypeError, ValueError) as exc:
        raise sweep.error([(("sampler", "params"), f"the {name} sampler refuses these params: {exc}")]) from None


def pruner_of(sweep: Sweep):
    """Median pruning for one objective (the sweep's ``pruning``), none otherwise."""
    opt = optuna()
    pruning = sweep.config.pruning
    if len(sweep.objectives) > 1 or not pruning.enabled:
        return opt.pruners.NopPruner()
    # steps are epochs counted from 1: epochs 1..warmup_epochs are never pruned
    return opt.pruners.MedianPruner(n_startup_trials=pruning.startup_trials,
                                    n_warmup_steps=pruning.warmup_epochs + 1)


@contextlib.contextmanager
def study_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the sweep folder (``study.lock``): one asker at a time across processes."""
    with open(folder / "study.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_study(sweep: Sweep, folder: Path, *, resume: bool, overwrite: bool):
    """Create the sweep's study, or load it on ``resume`` (refused if the sweep changed)."""
    opt = optuna()
    storage = storage_of(sweep, folder)
    exists = sweep.name in opt.study.get_all_study_names(storage)
    if exists and overwrite:
        opt.delete_study(study_name=sweep.name, storage=storage)
    elif exists and not resume:
        raise RunError(f"the storage already holds a study named {sweep.name!r}; continue it with "
                       f"`multiloss sweep {sweep.file.name} --resume`, replace it with --overwrite, or give this "
                       "sweep another `name`")
    elif resume and not exists and any(folder.glob("trial-*")):
        raise RunError(f"--resume: the storage holds no study named {sweep.name!r}, but {folder} holds its "
                       "trials: point `storage:` at the database the sweep began with (a relative sqlite:/// path "
                       "is relative to the sweep file, and the journal file too), or start again with --overwrite")
    directions = ["maximize" if sweep.modes[k] == "max" else "minimize" for k in sweep.objectives]
    study = opt.create_study(storage=storage, study_name=sweep.name, directions=directions,
                             sampler=sampler_of(sweep), pruner=pruner_of(sweep), load_if_exists=True)
    session = int(study.user_attrs.get("sessions", 0))      # processes that opened it before (under the lock)
    study.set_user_attr("sessions", session + 1)
    if session:
        study.sampler = sampler_of(sweep, session)
    old = study.user_attrs.get("sweep")
    new = sweep.fingerprint()
    if old is None:
        study.set_user_attr("sweep", new)
        for point in enqueued_points(sweep.config):      # tried first, in order; keys left out are sampled
            study.enqueue_trial(point, skip_if_exists=True)
    elif old != new:
        changed = [k for k in dict.fromkeys([*new, *old]) if old.get(k) != new.get(k)]
        raise sweep.error([((k,), "differs from the sweep being resumed; resume with the same sweep (only "
                                  "trials, output_dir and baselines may change), or start another sweep "
                                  "(--set name=...)") for k in changed])
    return study, storage


def shell_word(text: str) -> str:
    import shlex

    return shlex.quote(text)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_stale(sweep: Sweep, study, storage, folder: Path) -> dict[int, str]:
    """End the trials a stopped sweep on this machine left running (``storage``: the study's): ``{number:
    what became of it}``.  A trial whose process finished its run (its ``metrics.json`` has every
    objective, finite) before the sweep was stopped counts as complete with those values; the others fail."""
    opt = optuna()
    host, now, ended = socket.gethostname(), time.time(), {}
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(opt.trial.TrialState.RUNNING,)):
        owner = t.user_attrs.get("coordinator")
        if owner is None:
            orphan = t.datetime_start is None or now - t.datetime_start.timestamp() > ORPHAN_SECONDS
        else:
            orphan = t.user_attrs.get("host") == host and not alive(int(owner))
        if not orphan:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        run_folder = folder / t.user_attrs.get("folder", trial_name(t.number))
        values = finished_values(run_folder, sweep.objectives)
        if values is not None:
            storage.set_trial_user_attr(trial_id, "recovered", "finished after its sweep was stopped; values "
                                                               "read from its metrics.json")
            study.tell(t.number, values)
            ended[t.number] = "finished before its sweep was stopped; counted complete (from its metrics.json)"
            continue
        kept = "its folder is kept" if run_folder.is_dir() else "it had no folder yet"
        storage.set_trial_user_attr(trial_id, "error", f"left running by a sweep that was stopped; {kept}")
        study.tell(t.number, state=opt.trial.TrialState.FAIL)
        ended[t.number] = f"left running by a stopped sweep; marked failed ({kept})"
        fixed = t.system_attrs.get("fixed_params")
        if fixed:       # an enqueued point (the packaged weights beside the front): not lost to the kill
            study.enqueue_trial(dict(fixed))
            ended[t.number] += ("; its enqueued point is queued again (it counts as a trial: give --set "
                                "trials=N for more if the sweep has none left)")
    return ended


def finished_values(run_folder: Path, objectives: list[str]) -> list[float] | None:
    """The objectives of a trial whose run ended (``metrics.json``, its last artifact, is written), each
    finite; None when it did not end or an objective is missing or not finite."""
    try:
        values = objective_values(run_folder, objectives)
    except (RunError, OSError, ValueError, KeyError, TypeError):
        return None
    return values if all(math.isfinite(v) for v in values) else None


# --- one trial --------------------------------------------------------------------------------

def objective_values(run_folder: Path, objectives: list[str]) -> list[float]:
    """The final model's value of each objective, from the trial's ``metrics.json``."""
    splits = json.loads((run_folder / "metrics.json").read_text(encoding="utf-8"))["splits"]
    out = []
    for key in objectives:
        split, name = ("val", key[4:]) if key.startswith("val_") else ("train", key)
        if name not in splits.get(split, {}):
            raise RunError(f"{run_folder}/metrics.json has no {key!r} ({split} split keys: "
                           f"{', '.join(sorted(splits.get(split, {})))})")
        value = splits[split][name]
        out.append(math.nan if value is None else float(value))   # a non-finite value is written null
    return out


def error_text(log: Path, returncode: int) -> str:
    """Why a trial's process failed: its ``error:`` message, or the signal that killed it."""
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode).name
        except ValueError:
            sig = "a signal"
        return f"the trial's process was killed by {sig} (signal {-returncode}); its folder is kept"
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    if starts:
        return "\n".join(lines[starts[-1]:]).removeprefix("error: ").strip()
    last = next((line for line in reversed(lines) if line.strip()), "")
    return f"exit status {returncode}" + (f": {last.strip()}" if last else "")


@dataclass
class Running:
    """A trial whose process runs."""

    trial: Any
    values: dict[str, Any]
    process: subprocess.Popen
    log: TextIO
    folder: Path
    started: float = field(default_factory=time.monotonic)
    reported: int = 0
    pruned: bool = False


@dataclass
class Finished:
    """What the progress display and the plain lines say of a trial that ended."""

    number: int
    state: str
    values: list[float] | None
    seconds: float
    error: str | None = None


class Scheduler:
    """Up to ``workers`` trial processes at once: ask, launch, report epochs, prune, tell."""

    def __init__(self, sweep: Sweep, study, folder: Path, workers: int, on_finish: Callable[[Finished], None]):
        self.sweep, self.study, self.folder, self.workers = sweep, study, folder, workers
        self.on_finish = on_finish
        self.running: dict[int, Running] = {}
        self.key = sweep.objectives[0] if len(sweep.objectives) == 1 else None   # reported each epoch
        self.exhausted = False

    def run(self) -> None:
        try:
            while True:
                while not self.exhausted and len(self.running) < self.workers:
                    self.start_next()
                if not self.running:
                    return
                for number in list(self.running):
                    self.poll(self.running[number])
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            self.stop_all("interrupted (Ctrl-C) while it ran; its folder is kept")
            raise

    def claim(self):
        """A new trial, or None when the study has its number of trials (counted under the folder's lock)."""
        waiting = optuna().trial.TrialState.WAITING      # an enqueued point not yet asked for: not a trial yet
        with study_lock(self.folder):
            begun = [t for t in self.study.get_trials(deepcopy=False) if t.state != waiting]
            if len(begun) >= self.sweep.config.trials:
                return None
            trial = self.study.ask()
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("coordinator", os.getpid())
            return trial

    def start_next(self) -> None:
        trial = self.claim()
        if trial is None:
            self.exhausted = True
            return
        values = sample(trial, self.sweep.config.space)
        trial.set_user_attr("config", values)
        overrides = self.sweep.trial_overrides(trial.number, self.folder, values)
        trial.set_user_attr("folder", trial_name(trial.number))
        try:
            from .config import load_run_config

            load_run_config(self.sweep.run_path, overrides)   # a bad sampled config fails here, not in a process
        except SpecError as exc:
            self.fail(trial, str(exc), 0.0)
            return
        arguments = ["train", str(self.sweep.run_path), *(arg for text in overrides for arg in ("--set", text))]
        trial.set_user_attr("command", " ".join(["multiloss", *map(shell_word, arguments)]))
        command = [sys.executable, "-m", "multiloss.run.sweep_trial", str(os.getpid()), *arguments]
        logs = self.folder / "logs"
        logs.mkdir(exist_ok=True)
        log = open(logs / f"{trial_name(trial.number)}.log", "w", encoding="utf-8")   # noqa: SIM115
        env = dict(os.environ, MULTILOSS_TRIAL=str(trial.number), MULTILOSS_SWEEP=str(self.folder.resolve()))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env)
        trial.set_user_attr("pid", process.pid)
        self.running[trial.number] = Running(trial, values, process, log, self.folder / trial_name(trial.number))

    def poll(self, run: Running) -> None:
        if self.key is not None and not run.pruned:
            self.report(run)
        code = run.process.poll()
        if code is not None:
            self.finish(run, code)

    def report(self, run: Running) -> None:
        """Each new epoch's objective value to the trial; a trial the pruner stops is ended."""
        history = run.folder / "history.json"
        try:
            rows = json.loads(history.read_text(encoding="utf-8")) if history.is_file() else []
        except ValueError:
            return
        for row in rows:
            epoch, value = int(row.get("epoch", 0)), row.get(self.key)
            if epoch <= run.reported or value is None or not math.isfinite(float(value)):
                continue
            run.trial.report(float(value), step=epoch)
            run.reported = epoch
            if run.trial.should_prune():
                run.pruned = True
                run.process.terminate()
                return

    def finish(self, run: Running, code: int) -> None:
        opt = optuna()
        del self.running[run.trial.number]
        run.log.close()
        seconds = time.monotonic() - run.started
        run.trial.set_user_attr("seconds", round(seconds, 2))
        log = self.folder / "logs" / f"{trial_name(run.trial.number)}.log"
        if run.pruned:
            self.study.tell(run.trial, state=opt.trial.TrialState.PRUNED)
            self.on_finish(Finished(run.trial.number, "pruned", None, seconds))
            return
        if code != 0:
            self.fail(run.trial, error_text(log, code), seconds)
            return
        try:
            values = objective_values(run.folder, self.sweep.objectives)
        except (RunError, OSError, ValueError, KeyError) as exc:
            self.fail(run.trial, str(exc), seconds)
            return
        if not all(math.isfinite(v) for v in values):
            self.fail(run.trial, "an objective is not finite: " + ", ".join(
                f"{k}={v}" for k, v in zip(self.sweep.objectives, values)), seconds)
            return
        self.study.tell(run.trial, values)
        self.on_finish(Finished(run.trial.number, "complete", values, seconds))

    def fail(self, trial, message: str, seconds: float) -> None:
        trial.set_user_attr("error", message)
        self.study.tell(trial, state=optuna().trial.TrialState.FAIL)
        self.on_finish(Finished(trial.number, "failed", None, seconds, message))

    def stop_all(self, message: str) -> None:
        """End every trial process (Ctrl-C); record the trials as failed."""
        for run in list(self.running.values()):
            with contextlib.suppress(OSError):
                run.process.terminate()
            try:
                run.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()
            del self.running[run.trial.number]
            run.log.close()
            self.fail(run.trial, message, time.monotonic() - run.started)


# --- the command ------------------------------------------------------------------------------

def open_folder(sweep: Sweep, *, resume: bool, overwrite: bool) -> RunDir:
    """The sweep folder, checked and locked (release it when the sweep ends): a second sweep into a
    folder holding one is refused unless ``resume`` (which joins a sweep still running there: nothing in
    the folder is touched) or ``overwrite``, which is refused while another process works in it."""
    hint = f"multiloss sweep {sweep.file.name}"
    folder = RunDir(sweep.folder, resume=resume, overwrite=overwrite, hint=hint,
                    not_work=("sweep.yaml", "study.lock"),    # a sweep refused before its study: nothing to lose
                    exclusive=False)        # workers that join with --resume share it: study.lock orders their asks
    if resume and folder.holds_run():
        folder.lock(shared=True)
        folder.check_writable()
    else:
        folder.open()
    try:
        folder.write_text("sweep.yaml", sweep.to_yaml())
    except BaseException:
        folder.release()
        raise
    return folder


def run_sweep(source: str | os.PathLike | dict, overrides: list[str] | None = None, *, workers: int = 1,
              resume: bool = False, overwrite: bool = False, say: Callable[[str], object] = print) -> dict:
    """A sweep end to end: its trials, then ``trials.csv``, ``summary.md`` and ``pareto.png``."""
    if workers < 1:
        raise RunError(f"--workers must be 1 or more, got {workers}")
    sweep = load_sweep(source, overrides)
    sampler_of(sweep)              # a sampler refusing its params: before the folder and the study are made
    run_dir = open_folder(sweep, resume=resume, overwrite=overwrite)
    with run_dir:                   # its lock, shared with the workers that join: no --overwrite under them
        return _run_study(sweep, run_dir, workers, resume, overwrite, say)


def _run_study(sweep: Sweep, run_dir: RunDir, workers: int, resume: bool, overwrite: bool,
               say: Callable[[str], object]) -> dict:
    from . import sweep_report

    folder = run_dir.path
    finished_states = tuple(getattr(optuna().trial.TrialState, name) for name in FINISHED_STATES)
    with study_lock(folder):
        study, storage = open_study(sweep, folder, resume=resume, overwrite=overwrite)
        for number, what in fail_stale(sweep, study, storage, folder).items():
            say(f"{trial_name(number)}: {what}")
    run_dir.share()                 # replaced: others may join it now
    done = len(study.get_trials(deepcopy=False, states=finished_states))
    progress = sweep_report.SweepProgress(sweep, done, say)

    def finished(result: Finished) -> None:
        rows = sweep_report.write_reports(sweep, study, folder)
        progress.update(result, rows)

    try:
        with progress:
            Scheduler(sweep, study, folder, workers, finished).run()
    except KeyboardInterrupt:
        sweep_report.write_reports(sweep, study, folder)
        say(f"`multiloss sweep {sweep.file.name} --resume` continues the sweep in {folder}")
        raise
    rows = sweep_report.write_reports(sweep, study, folder)
    say(sweep_report.summary_text(sweep, rows))
    say(f"artifacts: {folder}")
    return {"folder": folder, "trials": rows}


def sweep_files(sweep_dir: str | os.PathLike) -> Sweep:
    """The sweep a sweep folder holds (its ``sweep.yaml``), without checking its run configs again."""
    path = Path(sweep_dir) / "sweep.yaml"
    if not path.is_file():
        raise RunError(f"{sweep_dir} is not a sweep folder: it has no sweep.yaml (give the folder "
                       "`multiloss sweep` wrote, e.g. sweeps/NAME)")
    sweep = load_sweep(path, check_run=False)
    sweep.config.output_dir = str(Path(sweep_dir).parent)
    return sweep


def load_folder(sweep_dir: str | os.PathLike):
    """``(sweep, study)`` of a sweep folder."""
    sweep = sweep_files(sweep_dir)
    opt = optuna()
    storage = storage_of(sweep, Path(sweep_dir))
    if sweep.name not in opt.study.get_all_study_names(storage):
        raise RunError(f"{sweep_dir}: its storage holds no study named {sweep.name!r} (was the sweep started?)")
    return sweep, opt.load_study(study_name=sweep.name, storage=storage)


def show_sweep(sweep_dir: str | os.PathLike, say: Callable[[str], object] = print) -> list:
    """Reprint a sweep's summary, brought up to date from its study (the reports are rewritten)."""
    from . import sweep_report

    sweep, study = load_folder(sweep_dir)
    rows = sweep_report.write_reports(sweep, study, Path(sweep_dir))
    say(sweep_report.summary_text(sweep, rows))
    return rows


def best_config(sweep_dir: str | os.PathLike, pick: str | None, out: str | os.PathLike | None = None,
                say: Callable[[str], object] = print) -> Path:
    """Write the resolved run config of the front trial ``pick`` prefers (``depth=0.7,seg=0.3``)."""
    from . import sweep_report
    from .atomic import write_text
    from .config import load_run_config

    sweep, study = load_folder(sweep_dir)
    rows = sweep_report.trial_rows(sweep, study)
    weights = sweep_report.parse_pick(pick, sweep.objectives)
    row = sweep_report.pick_trial(rows, sweep, weights)
    trial_config = Path(sweep_dir) / row.folder / "config.yaml"
    base = sweep.base
    cfg = load_run_config(trial_config, [f"name={sweep.name}-best",
                                         f"output_dir={json.dumps(str(base.get('output_dir', 'runs')))}"])
    target = Path(out) if out else Path(sweep_dir) / "best.yaml"
    write_text(target, f"# {row.folder} of the sweep {sweep.name}, picked with {pick or 'equal weights'}:\n"
                       f"# {sweep_report.values_text(sweep, row)}\n" + cfg.to_yaml())
    say(f"{row.folder}: {sweep_report.values_text(sweep, row)}")
    say(f"wrote {target}; train it with `multiloss train {target}`")
    return target


def check_sweep(path: str | os.PathLike, overrides: list[str] | None = None) -> str:
    """What ``multiloss validate SWEEP.yaml`` checks: the sweep, and everything its first trial's run
    checks before it trains; a one-line description."""
    from .kinds import get_kind
    from .sweep_config import corner_values

    sweep = load_sweep(path, overrides)
    problems = storage_problems(sweep)
    if problems:
        raise sweep.error(problems)
    sampler_of(sweep)              # its params, as Optuna takes them
    run = get_kind("train").check(sweep.run_path, sweep.trial_overrides(0, sweep.folder, corner_values(sweep)[0]))
    objectives = ", ".join(f"{k} ({sweep.modes[k]})" for k in sweep.objectives)
    return (f"sweep {sweep.name!r}: {sweep.config.trials} trials over {len(sweep.paths())} config paths, "
            f"objectives {objectives}; trial run: {run}")


__all__ = ["Finished", "Scheduler", "best_config", "check_sweep", "load_folder", "objective_values", "open_study",
           "run_sweep", "show_sweep", "sweep_files"]
