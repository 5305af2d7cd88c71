"""glorot_core: the science of glorot (Glorot & Bengio, 2010), pure PyTorch + pydantic.

No web, no database, no queue: ``glorot run spec.json -o report.json`` needs nothing else.
"""

__version__ = "0.1.0"
