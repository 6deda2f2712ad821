"""g2u_tasks must import and work where Prefect is absent (the GPU machines)."""
import subprocess
import sys

SCRIPT = r"""
import importlib, pkgutil, sys
class BlockPrefect:
    def find_spec(self, name, path=None, target=None):
        if name == "prefect" or name.startswith("prefect."):
            raise ImportError("prefect is blocked in this test")
sys.meta_path.insert(0, BlockPrefect())
import g2u_tasks
mods = [m.name for m in pkgutil.walk_packages(g2u_tasks.__path__, "g2u_tasks.")]
for m in mods:
    importlib.import_module(m)
assert not any(k == "prefect" or k.startswith("prefect.") for k in sys.modules)
print(len(mods))
"""


def test_core_imports_without_prefect():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip().splitlines()[-1]) >= 15  # every module was imported
