"""The README's quick-start Python example runs as written (issue: the first example once failed on 28×28)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_first_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no ```python block"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md[python block 1]", "exec"), namespace)
    assert tuple(namespace["y"].shape) == (2, 28, 28, 64)
    assert "torch.Size([2, 28, 28, 64])" in capsys.readouterr().out
