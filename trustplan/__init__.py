"""trustplan: declarative plan/apply rotation of the root CAs of Talos Linux clusters."""

from pathlib import Path as _Path

__version__ = "0.1.0"

# In a source checkout the sibling folders planner/, providers/, schemas/ and state/ are this
# package's subpackages (pyproject maps them with package-dir); make `python -m trustplan` and
# tools run from the checkout resolve them the same way the installed package does.
_root = _Path(__file__).resolve().parent.parent
if (_root / "planner" / "__init__.py").exists() and str(_root) not in __path__:
    __path__.append(str(_root))
