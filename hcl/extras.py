"""The optional dependencies of hcl, by extra, and the error that names the extra to install.

``pip install hcl-contrastive`` gives the losses, data, metrics, training, studies and the
command line. The notebook and visualisation stack is the ``notebooks`` extra, and ``numba``
(compiled CPU loops for the hierarchy constraint and for the rows of per-level retrieval, which
otherwise run as array ops; umap-learn brings it too) has an extra of its own. ``make setup``
and ``environment.yml`` install them all.

:func:`requires_extra` wraps the import of a feature: a missing module of an extra becomes an
:class:`ImportError` that says which extra to install::

    with requires_extra("hcl.viz.project_2d"):
        import umap
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["EXTRAS", "requires_extra"]

# extra -> the top-level modules it provides (import names, not distribution names)
EXTRAS: dict[str, frozenset[str]] = {
    "notebooks": frozenset({"plotly", "umap", "pandas", "ipywidgets", "anywidget", "IPython"}),
    "numba": frozenset({"numba"}),
}


@contextlib.contextmanager
def requires_extra(feature: str) -> Iterator[None]:
    """Re-raise a :class:`ModuleNotFoundError` for a module of an extra as an ImportError naming
    ``feature``, the missing module and the ``pip install`` line; other errors pass unchanged.

    Raises:
        ImportError: a module of :data:`EXTRAS` is not installed.
    """
    try:
        yield
    except ModuleNotFoundError as error:
        missing = (error.name or "").partition(".")[0]
        for extra, modules in EXTRAS.items():
            if missing in modules:
                raise ImportError(
                    f"{feature} needs {missing}, which is not installed; it comes with hcl's {extra!r} extra: "
                    f"pip install 'hcl-contrastive[{extra}]'"
                ) from error
        raise
