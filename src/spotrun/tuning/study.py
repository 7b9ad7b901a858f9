"""A tuning job's Optuna study, kept in spotrun's own database.

The study has the tuning job's name and lives in Optuna's tables beside spotrun's, in the
database the server uses (SQLite or PostgreSQL), so ``optuna-dashboard <database URL>``
shows every tuning job's trials as they run. spotrun keeps its own schema revision in
``spotrun_alembic_version`` because Optuna keeps its revision in Alembic's default table.

Samplers and pruners are not stored (Optuna never stores them): every server process
rebuilds them from the tuning job's spec, so a restarted server goes on with the same
search, its trials all read back from the database.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import optuna
from optuna.storages import RDBStorage

from spotrun.spec._tuning import TuningSpec
from spotrun.tuning import space

# Optuna logs every trial at INFO on its own handler; the tuning job's events say it instead
optuna.logging.set_verbosity(optuna.logging.WARNING)
optuna.logging.disable_default_handler()
logging.getLogger("optuna").propagate = True


def open_storage(store_url: str) -> RDBStorage:
    """Optuna's storage on spotrun's database, creating Optuna's tables the first time."""
    url = store_url  # ``Store.url``: already normalised by ``spotrun.dburl``
    kwargs: dict[str, object] = {}
    if url.startswith("sqlite"):
        # spotrun's own writers hold SQLite's write lock at times: wait, as they do
        kwargs = {"connect_args": {"timeout": 60}}
    else:
        # as spotrun's own engine: a paused server must not keep the study's row locks
        kwargs = {
            "pool_pre_ping": True,
            "connect_args": {
                "connect_timeout": 10,
                "application_name": "spotrun-optuna",
                "options": "-c idle_in_transaction_session_timeout=4000",
            },
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeat and experimental-feature notices
        return RDBStorage(url, engine_kwargs=kwargs)


@dataclass
class Search:
    """One tuning job's study with the sampler and pruner its strategy names."""

    study: optuna.Study
    storage: RDBStorage
    spec: TuningSpec

    @property
    def study_id(self) -> int:
        return self.storage.get_study_id_from_name(self.study.study_name)

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)


def open_search(storage: RDBStorage, spec: TuningSpec, n_trials: int) -> Search:
    """The tuning job's study, created on first use."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            sampler=space.sampler(spec, n_trials),
            pruner=space.pruner(spec),
            direction=space.direction(spec),
            load_if_exists=True,
        )
    return Search(study, storage, spec)
