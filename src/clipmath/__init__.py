"""clipmath: arithmetic in a shared image–text embedding space (CLIP and its family).

Compose a query from a reference image and text, search an image gallery with it, evaluate on the composed image
retrieval benchmarks, caption embeddings, and serve it all over HTTP.
"""

from clipmath.compose import CompositionQuery, Term, available_methods, get_composer, parse_expression
from clipmath.encoders import Encoder, load_encoder
from clipmath.errors import ClipmathError
from clipmath.retrieval import Retriever, RetrieverConfig
from clipmath.store import Gallery, IndexConfig, index_folder

__version__ = "0.1.0"

__all__ = [
    "ClipmathError", "CompositionQuery", "Encoder", "Gallery", "IndexConfig", "Retriever", "RetrieverConfig", "Term",
    "__version__", "available_methods", "get_composer", "index_folder", "load_encoder", "parse_expression",
]
