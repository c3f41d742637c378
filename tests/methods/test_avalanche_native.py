"""A mergecl method in a user's own Avalanche strategy (mergecl.plugin): the example of
docs/avalanche.md runs offline on the quick budget; what the plugin infers; its Avalanche type."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

DOC = Path(__file__).resolve().parents[2] / "docs" / "avalanche.md"


def _example() -> str:
    return re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)


def test_the_example_is_short():
    assert len(_example().strip().splitlines()) <= 30


@pytest.mark.e2e
def test_docs_example_runs_offline_on_the_quick_budget(tmp_path, data_root):
    script = tmp_path / "example.py"
    script.write_text("import socket\n"
                      "def _refuse(*a, **k):\n    raise OSError('network blocked in this test')\n"
                      "socket.socket.connect = _refuse\nsocket.create_connection = _refuse\n"
                      + _example())
    env = {**os.environ, "MERGECL_QUICK": "1", "MERGECL_CACHE": str(data_root), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith(("pnm:", "magmax:"))]
    assert len(lines) == 2
    for line in lines:
        accuracy = float(re.search(r"accuracy ([0-9.]+)", line).group(1))
        assert 0.3 < accuracy <= 1.0  # two experiences of MNIST: well above chance
    assert "merge coefficients [1.0, 0." in lines[0]  # P&M: α_0 = 1, then its fit in (0, 1)


def test_plugin_infers_stream_head_and_scenario():
    from avalanche.core import SupervisedPlugin
    from avalanche.models import SimpleMLP
    from mergecl.methods.avalanche_native import PluginGroup, StreamInfo

    from mergecl import plugin

    info = StreamInfo(classes_per_experience=[[3, 1], [0, 2]], n_classes=4)
    method = plugin("magmax", SimpleMLP(num_classes=4, input_size=8), info, lam=0.7)
    assert isinstance(method, SupervisedPlugin)
    assert method.space.head_names == ["classifier.weight", "classifier.bias"]
    assert method.ctx.scenario == "class-incremental" and method.ctx.loss_mask == "none"
    assert method.params.lam == 0.7
    same = StreamInfo(classes_per_experience=[[0, 1, 2, 3]] * 2, n_classes=4)
    assert plugin("avg", SimpleMLP(num_classes=4, input_size=8), same).ctx.scenario == "domain-incremental"
    group = plugin("ewc", SimpleMLP(num_classes=4, input_size=8), info)
    assert isinstance(group, PluginGroup) and isinstance(group, SupervisedPlugin)
    assert type(group.members[1]).__name__ == "EWCPlugin"
    with pytest.raises(ValueError, match="lora_targets"):
        plugin("pnm", SimpleMLP(num_classes=4, input_size=8), info, parameterisation="lora")
    with pytest.raises(ValueError, match="not a submodule"):
        plugin("avg", SimpleMLP(num_classes=4, input_size=8), info, head="nope")
    assert torch.get_num_threads() >= 1
