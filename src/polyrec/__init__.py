"""polyrec: personalized recommendation with one data layer, one evaluator and one serving path."""

from polyrec.data.dataset import Dataset, IdMap
from polyrec.errors import PolyrecError

__version__ = "0.1.0"
__all__ = ["Dataset", "IdMap", "PolyrecError", "__version__"]
