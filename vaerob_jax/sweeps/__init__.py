"""Grid specs, resumable per-cell execution and tidy result tables (CSV/JSON, no pandas).

``ResultStore`` + ``run_grid`` keep one checksummed result per grid cell, tied to the config
fingerprint and to the digest of the models it came from (``params_digest``), and never
commit a non-finite result (see ``vaerob_jax.sweeps.store`` for the guarantees);
``check_output_dir`` and ``lock_output`` make an output folder safe to run into.
``sweeps.parallel`` lays grid axes over a process's devices, ``sweeps.distributed`` splits a
study between processes (hosts).
"""

from vaerob_jax.sweeps.checks import NonFiniteResultError, check_finite
from vaerob_jax.sweeps.digest import bytes_digest, leaf_digests, params_digest, stack_digests
from vaerob_jax.sweeps.execute import run_grid
from vaerob_jax.sweeps.grid import (
    Cell,
    GridSpec,
    canonical_value,
    cell_key,
    format_value,
    same_value,
)
from vaerob_jax.sweeps.output import (
    OutputDirError,
    OutputLock,
    OutputLockedError,
    check_output_dir,
    lock_output,
)
from vaerob_jax.sweeps.progress import format_duration
from vaerob_jax.sweeps.store import (
    CellRecomputeWarning,
    CellResult,
    FingerprintMismatchError,
    ResultStore,
    fingerprint_of,
)
from vaerob_jax.sweeps.tables import (
    as_rows,
    atomic_write_bytes,
    columns_of,
    filter_rows,
    join_rows,
    read_csv,
    read_json,
    require_columns,
    to_columns,
    write_csv,
    write_json,
)

__all__ = [
    "Cell",
    "CellRecomputeWarning",
    "CellResult",
    "FingerprintMismatchError",
    "GridSpec",
    "NonFiniteResultError",
    "OutputDirError",
    "OutputLock",
    "OutputLockedError",
    "ResultStore",
    "as_rows",
    "atomic_write_bytes",
    "bytes_digest",
    "canonical_value",
    "cell_key",
    "check_finite",
    "check_output_dir",
    "columns_of",
    "filter_rows",
    "fingerprint_of",
    "format_duration",
    "format_value",
    "join_rows",
    "leaf_digests",
    "lock_output",
    "params_digest",
    "read_csv",
    "read_json",
    "require_columns",
    "run_grid",
    "same_value",
    "stack_digests",
    "to_columns",
    "write_csv",
    "write_json",
]
