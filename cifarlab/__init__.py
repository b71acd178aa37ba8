"""cifarlab: train a CNN on your own CIFAR-100 classes and compare pooling tactics.

One module per job:

* ``classes``    - the CIFAR-100 catalogue, and ids / names / superclasses -> a class selection
* ``data``       - download, verify, cache, the shipped sample, the subset in memory, the validation split
* ``config``     - the frozen RunConfig and its presets (``template``, ``improved``)
* ``models``     - Normalize, the template CNN and the improved net, each with three pooling tactics
* ``engine``     - the device-resident training loop
* ``liveview``   - tqdm + matplotlib progress
* ``evaluation`` - final metrics, reports, overfitting measures
* ``records``    - run records on disk
* ``experiment`` - one run start to finish (what the notebook and the CLI call)
* ``comparison`` - mean ± std over seeds, the choice rule, comparison plots
* ``export``     - best/ folder, safe loading, ONNX + onnxruntime check
* ``widgets``    - the class picker
* ``cli``        - ``python -m cifarlab``

Heavy modules are imported lazily; ``import cifarlab`` is cheap.
"""
__version__ = "0.1.0"

from .classes import ClassSelection, ClassSelectionError, select_classes  # noqa: F401
from .config import PRESETS, RunConfig, make_config  # noqa: F401
