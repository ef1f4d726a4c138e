"""The core install (`pip install hcl-contrastive`, no extras) trains and evaluates; a feature of an
extra, used without it, raises an ImportError naming the extra. Simulated in a subprocess by
blocking the extras' modules (``sys.modules[name] = None``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from hcl.extras import EXTRAS, requires_extra

BLOCK_ALL = "import sys\nfor name in {names!r}:\n    sys.modules[name] = None\n"


def _run_without(modules: set[str], code: str, tmp_path) -> subprocess.CompletedProcess:
    script = BLOCK_ALL.format(names=sorted(modules)) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )


def test_requires_extra_names_the_extra_and_passes_other_errors() -> None:
    with pytest.raises(ImportError, match=r"feature X needs plotly, .* pip install 'hcl-contrastive\[notebooks\]'"):
        with requires_extra("feature X"):
            raise ModuleNotFoundError("No module named 'plotly.graph_objects'", name="plotly.graph_objects")
    with pytest.raises(ModuleNotFoundError, match="somewhere_else"):
        with requires_extra("feature X"):
            raise ModuleNotFoundError("No module named 'somewhere_else'", name="somewhere_else")


@pytest.mark.parametrize(
    ("blocked", "code", "feature"),
    [
        ("plotly", "from hcl.viz import scatter_by_level", "hcl.viz.scatter_by_level"),
        ("ipywidgets", "from hcl.viz import HierarchyExplorer", "hcl.viz.HierarchyExplorer"),
        ("umap", "import numpy as np\nfrom hcl.viz import project_2d\nproject_2d(np.eye(5), 'umap')", "project_2d"),
        ("pandas", "from hcl.metrics import retrieval_table\nretrieval_table({0: {'map@r': 1.0}})", "retrieval_table"),
        ("plotly", "from hcl.study import tradeoff_figure", "hcl.study.tradeoff_figure"),
        # before any training: the demo's and the study's reports
        ("umap", "from hcl.demo import run_demo\nrun_demo('out')", "the demo's report.html (hcl demo --no-report"),
        (
            "plotly",
            "from hcl.demo import find_configs_dir\nfrom hcl.study import run_study\n"
            "run_study(find_configs_dir() / 'study_fast.yaml', overrides=['output_dir=out'])",
            "the study's report, study.html (hcl study --no-report",
        ),
    ],
)
def test_a_visual_feature_without_the_extra_says_which_extra(blocked: str, code: str, feature: str, tmp_path) -> None:
    done = _run_without({blocked}, code, tmp_path)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ") and feature in last and f"needs {blocked}" in last, done.stderr
    assert "pip install 'hcl-contrastive[notebooks]'" in last
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("checkpoint.pt"))


def test_the_core_trains_and_evaluates_without_any_extra(tmp_path) -> None:
    """No plotly, umap, pandas, widgets or numba: a HiMulConE run on the synthetic set trains, evaluates
    per level and reloads; the hierarchy constraint takes its array-op path."""
    code = f"""
    import torch
    from hcl.losses import HiMulConE
    from hcl.losses._constraint import compiled_module
    from hcl.metrics import per_level_retrieval
    from hcl.train import TrainConfig, fit

    torch.manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(8, 2, 4, dtype=torch.float64), dim=-1).requires_grad_()
    labels = torch.tensor([[0, 0], [0, 0], [0, 1], [0, 1], [1, 2], [1, 2], [1, 3], [1, 3]])
    HiMulConE()(features, labels).backward()
    assert torch.isfinite(features.grad).all()
    cfg = TrainConfig(
        dataset="synthetic",
        data_options={{"depth": 2, "branching": [2, 2], "samples_per_leaf": 6, "image_size": 16, "cache": False}},
        width=4, embedding_dim=8, batch_size=16, epochs=1, progress=False, output_dir={str(tmp_path / "run")!r},
    )
    result = fit(cfg)
    assert -1 <= result.results["cpcc"] <= 1 and (result.run_dir / "embeddings_test.npz").is_file()
    assert sorted(per_level_retrieval(torch.randn(12, 4), torch.randint(0, 2, (12, 2)))) == [0, 1]
    assert compiled_module() is None  # no numba: the constraint ran as array ops
    """
    done = _run_without(set().union(*EXTRAS.values()), code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
