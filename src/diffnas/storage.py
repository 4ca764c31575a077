"""Database URLs handed to SQLAlchemy and Optuna (`--storage`), checked in one place.

`resolve_url` checks a URL before anything is created: its syntax, that SQLAlchemy knows the
database, that its driver is installed (and which extra installs it), that a SQLite file's
folder exists. `postgresql://...` is handed on with the driver that is installed: SQLAlchemy
2.x picks psycopg 3 for a bare `postgresql://`, diffnas' `postgres` extra installs psycopg2,
so the bare form becomes `postgresql+psycopg2://` when psycopg 3 is absent (a URL naming its
driver is kept as it is). `check_reachable` connects once; `storage_error` turns what
SQLAlchemy or Optuna raise while opening a storage into the same kind of message.
`study_names` lists the studies a storage holds without writing to it, and `read_only_url`
opens a SQLite file so that nothing can be written (`status`, `report`, `export`).
Messages never show a password.
"""

from __future__ import annotations

import importlib.util
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from diffnas.errors import UserError

# the extra (or package) that installs each database's driver
EXTRAS = {"postgresql": "pip install -e '.[postgres]' (psycopg2-binary)"}
CONNECT_TIMEOUT_S = 5
SCHEMA_ATTEMPTS = 5
STUDIES_TABLE = "studies"  # Optuna's table of studies


class StorageURL(str):
    """A resolved URL (what SQLAlchemy gets) that remembers how the user wrote it."""

    given: str

    def __new__(cls, url: str, given: str) -> StorageURL:
        made = super().__new__(cls, url)
        made.given = given
        return made


def shown(url: str | URL) -> str:
    """A URL fit for a message, as the user wrote it, its password hidden; a read-only SQLite
    URL (`read_only_url`) as its file."""
    url = getattr(url, "given", url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        return str(url)
    file = _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if file is not None and parsed.query.get("mode") == "ro":
        return str(file)
    return parsed.render_as_string(hide_password=True)


def _driver_installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve_url(url: str, option: str = "--storage") -> str:
    """The URL to hand SQLAlchemy, or a `UserError` naming `option`, the value and the fix."""
    if not url.strip():
        raise UserError(
            f"{option} is empty; give a database URL such as sqlite:///path/study.db or "
            "postgresql://user@host/db (or leave it out: SQLite in the run folder)",
            field="storage",
        )
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(
            f"{option} {url!r} is not a database URL; the form is "
            "dialect[+driver]://user[:password]@host[:port]/database, e.g. "
            "postgresql://user@host/db or sqlite:///path/study.db",
            field="storage",
        ) from None
    bare_postgres = parsed.drivername == "postgresql"
    if bare_postgres and not _driver_installed("psycopg") and _driver_installed("psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise UserError(
            f"{option} {shown(url)!r}: SQLAlchemy knows no database "
            f"{parsed.drivername!r}; diffnas uses sqlite:///FILE or postgresql://HOST/DB",
            field="storage",
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        backend = parsed.get_backend_name()
        extra = EXTRAS.get(
            backend,
            f"install a driver for {backend} or name one in the URL ({backend}+DRIVER://...)",
        )
        raise UserError(
            f"{option} {shown(url)!r} needs the database driver {err.name or parsed.drivername!r} "
            f"(SQLAlchemy's {parsed.drivername} dialect), which is not installed: {extra}",
            field="storage",
        ) from None
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite(parsed, url, option)
    return StorageURL(parsed.render_as_string(hide_password=False), url)


def _sqlite_file(parsed: URL) -> Path | None:
    """The file of a SQLite URL; None for an in-memory database."""
    database = parsed.database or ""
    if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
        return None
    return Path(database.removeprefix("file:"))


def _check_sqlite(parsed: URL, given: str, option: str) -> None:
    file = _sqlite_file(parsed)
    if file is None:
        raise UserError(
            f"{option} {shown(given)!r} is an in-memory database, gone when the search ends; "
            "give a file (sqlite:///path/study.db) or leave --storage out",
            field="storage",
        )
    if not file.parent.is_dir():
        raise UserError(
            f"{option} {shown(given)!r}: the folder {str(file.parent)!r} of the SQLite file does "
            "not exist; create it first",
            field="storage",
        )
    if file.exists():
        _sqlite_tables(file, option)  # an existing file must be a SQLite database


def _sqlite_tables(file: Path, option: str) -> set[str]:
    """The tables of a SQLite file, read without writing (not even a journal)."""
    try:
        with sqlite3.connect(f"file:{file}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        db.close()
    except sqlite3.Error as err:
        raise UserError(
            f"{option} {str(file)!r} is not a SQLite database ({err}); the file is damaged or "
            "is something else: restore it or give another file",
            field=file.name,
        ) from None
    return {name for (name,) in rows}


def read_only_url(url: str) -> str:
    """A SQLite URL opened read-only (SQLite itself refuses every write); others unchanged."""
    parsed = make_url(url)
    file = _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if file is None:
        return url
    return parsed.set(
        database=f"file:{file}", query={"mode": "ro", "uri": "true"}
    ).render_as_string(hide_password=False)


def engine_kwargs(url: str) -> dict[str, Any]:
    """A connection that gives up after `CONNECT_TIMEOUT_S` (a server down, a wrong host)."""
    if make_url(url).get_backend_name() == "postgresql":
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    return {}


def rdb_storage(
    url: str, *, read_only: bool = False, option: str = "--storage", **options: Any
) -> Any:
    """Optuna's `RDBStorage` on a resolved `url` (`options`: its heartbeat settings).

    `read_only`: SQLite opened so that nothing can be written, and no table created anywhere.
    Several processes opening a new PostgreSQL database at once race to create Optuna's
    schema, and all but one fail (a UniqueViolation on `CREATE TYPE`); the schema is created
    in one transaction, so it is complete once that error comes, and the loser opens again.
    """
    import warnings

    import optuna
    from optuna.storages import RDBStorage

    kwargs: dict[str, Any] = {"engine_kwargs": engine_kwargs(url), **options}
    if read_only:
        url, kwargs["skip_table_creation"] = read_only_url(url), True
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # Optuna marks its heartbeat API experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as err:
            if attempt == SCHEMA_ATTEMPTS - 1:
                raise storage_error(err, url, option) from None
            time.sleep(0.1 * (attempt + 1))  # the other process's transaction is committing
        except (SQLAlchemyError, ImportError) as err:
            raise storage_error(err, url, option) from None
        except RuntimeError as err:  # Optuna: the schema of another Optuna version
            raise UserError(f"{option} {shown(url)!r}: {err}", field="storage") from None
    raise AssertionError("unreachable")


def study_names(url: str, option: str = "--storage") -> list[str] | None:
    """The studies a storage holds, read without writing; None when it has no Optuna tables
    (a new database). A server that cannot be reached or a damaged file is a `UserError`."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        file = _sqlite_file(parsed)
        if file is None or not file.exists() or STUDIES_TABLE not in _sqlite_tables(file, option):
            return None
        url = read_only_url(url)
    engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
    try:
        with engine.connect() as connection:
            if not sqlalchemy.inspect(connection).has_table(STUDIES_TABLE):
                return None
            rows = connection.execute(sqlalchemy.text("SELECT study_name FROM studies"))
            return [name for (name,) in rows]
    except SQLAlchemyError as err:
        raise storage_error(err, url, option) from None
    finally:
        engine.dispose()


def check_reachable(url: str, option: str = "--storage") -> None:
    """Connect once (a SQLite file is not created): a server down is refused before any run
    folder exists, naming the host."""
    study_names(url, option)


def storage_error(err: BaseException, url: str, option: str = "--storage") -> UserError:
    """What opening the storage raised, as one message naming the storage and what to do."""
    parsed = make_url(url)
    text = " ".join(str(getattr(err, "orig", None) or err).split())[:300]
    if isinstance(err, ImportError):
        return UserError(
            f"{option} {shown(url)!r}: its database driver cannot be loaded ({text}); "
            f"{EXTRAS.get(parsed.get_backend_name(), 'install the driver')}",
            field="storage",
        )
    if parsed.get_backend_name() == "sqlite":
        return UserError(
            f"{option} {shown(url)!r}: the SQLite file cannot be used as an Optuna study "
            f"({text}); it is damaged or not a study database: restore it or give another",
            field="storage",
        )
    where = f"{parsed.host or 'localhost'}" + (f":{parsed.port}" if parsed.port else "")
    if isinstance(err, sqlalchemy.exc.OperationalError):
        return UserError(
            f"{option} {shown(url)!r}: the database server at {where} cannot be reached or "
            f"refused the connection ({text}); start it, or check the host, port, user and "
            "database name",
            field="storage",
        )
    return UserError(
        f"{option} {shown(url)!r}: the database at {where} cannot be used as an Optuna "
        f"storage ({type(err).__name__}: {text})",
        field="storage",
    )
