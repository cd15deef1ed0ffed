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


def test_timm_example_runs(capsys):
    """The README's timm example (issue 11's done-when) runs as written: a timm model with our pretrained_cfg."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    timm_blocks = [b for b in blocks if "timm.create_model" in b]
    assert timm_blocks, "README.md has no timm example"
    namespace: dict = {}
    exec(compile(timm_blocks[0], "README.md[timm example]", "exec"), namespace)
    model = namespace["m"]
    assert model.num_classes == 10 and model.pretrained_cfg["input_size"] == (3, 224, 224)
    assert model.pretrained_cfg["url"] == "" and "'input_size': (3, 224, 224)" in capsys.readouterr().out
