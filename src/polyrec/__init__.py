"""polyrec: personalized recommendation with one data layer, one evaluator and one serving path."""

from typing import TYPE_CHECKING, Any

from polyrec.errors import PolyrecError

if TYPE_CHECKING:
    from polyrec.data.dataset import Dataset, IdMap

__version__ = "0.1.0"
__all__ = ["Dataset", "IdMap", "PolyrecError", "__version__"]


def __getattr__(name: str) -> Any:
    # the data layer pulls pandas and pyarrow: import it on first use, so `polyrec --help` is fast
    if name in ("Dataset", "IdMap"):
        from polyrec.data import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'polyrec' has no attribute {name!r}")
