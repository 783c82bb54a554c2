"""The names that options accept, as plain tuples: importing this module imports nothing else.

The registries these names come from import torch, and building the ``peergrad`` parser or
checking a configuration's ranges must not (``peergrad --help`` and ``peergrad train --workers 0``
answer in well under a second; issue 25). ``tests/test_startup.py`` checks that each tuple of
registry names equals its registry, in order: when it fails, copy the registry's names here.
"""

from __future__ import annotations

__all__ = [
    "ADAM_PRESET_NAMES",
    "ALGORITHM_DEFAULT",
    "ALGORITHM_NAMES",
    "BUFFERS",
    "DATASET_NAMES",
    "DTYPE_NAMES",
    "ENGINES",
    "LOSSES",
    "MODEL_NAMES",
    "PARTITION_NAMES",
    "PLOT_AXIS_NAMES",
    "ROOT_DATASETS",
    "SYSTEM_PRESET_NAMES",
    "TEXT_DATASET_NAMES",
    "TEXT_DATA_OPTIONS",
    "TOPOLOGY_NAMES",
]

#: ``peergrad.algorithms.REGISTRY``
ALGORITHM_NAMES: tuple[str, ...] = (
    "allreduce",
    "dpsgd",
    "d2",
    "gradient-tracking",
    "detag",
    "decentralized-amsgrad",
    "decentralized-adagrad",
    "decentralized-adam",
    "dadam",
    "dadam-naive",
    "decentralized-adam-naive",
    "ef-sgd",
    "compressed-sgd",
    "armijo-csgd",
    "powersgd",
    "choco-sgd",
    "distributed-adam",
    "local-sgd",
    "post-local-sgd",
    "diloco",
)
#: ``peergrad.topology.TOPOLOGIES``
TOPOLOGY_NAMES: tuple[str, ...] = (
    "ring",
    "torus",
    "exponential",
    "one-peer-exponential",
    "complete",
    "star",
    "erdos-renyi",
    "identity",
)
#: ``peergrad.data.DATASETS``
DATASET_NAMES: tuple[str, ...] = (
    "mnist",
    "digits",
    "mnist1d",
    "mnist-idx",
    "cifar10",
    "cifar100",
    "synthetic-logistic",
    "pydoc-topics",
)
#: ``peergrad.data.TEXT_DATASETS``: the built-in data sets of next-token windows (language
#: modelling: token-level cross-entropy, perplexity), and the ``--data-set`` keys they take
TEXT_DATASET_NAMES: tuple[str, ...] = ("pydoc-topics",)
TEXT_DATA_OPTIONS: tuple[str, ...] = ("seq_len",)
#: ``peergrad.data.PARTITIONS``
PARTITION_NAMES: tuple[str, ...] = ("iid", "sorted", "dirichlet", "contiguous")
#: ``peergrad.models.MODELS``
MODEL_NAMES: tuple[str, ...] = ("logreg", "mlp", "lenet5", "resnet20", "transformer")
#: ``peergrad.system.PRESETS``
SYSTEM_PRESET_NAMES: tuple[str, ...] = ("uniform", "datacenter", "two-datacenters", "edge")
#: ``peergrad.train.plots.PLOT_AXES`` (that module imports matplotlib)
PLOT_AXIS_NAMES: tuple[str, ...] = (
    "steps",
    "samples",
    "bytes",
    "rounds",
    "simulated_time",
    "wall_time",
    "epochs",
)
#: ``peergrad.transforms.generic_adam.PRESETS``
ADAM_PRESET_NAMES: tuple[str, ...] = ("generic", "adam", "rmsprop", "adagrad", "adaema", "adamnc")
#: ``peergrad.train.resolve.LOSSES``: the built-in names of ``--loss``
LOSSES: tuple[str, ...] = ("cross-entropy", "mse")

#: Values of ``--engine``.
ENGINES: tuple[str, ...] = ("simulated", "distributed")
#: Values of ``--dtype`` (``peergrad.train.build.DTYPES`` maps them to torch dtypes).
DTYPE_NAMES: tuple[str, ...] = ("float32", "float64")
#: Values of ``--buffers``.
BUFFERS: tuple[str, ...] = ("local", "average")

#: Data sets read from ``--data-root``, with the layout their folder must have.
ROOT_DATASETS: dict[str, str] = {
    "mnist-idx": "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
    "t10k-labels-idx1-ubyte (each optionally .gz) directly or in MNIST/raw",
    "cifar10": "cifar-10-batches-py/{data_batch_1..5, test_batch} (the CIFAR python version)",
    "cifar100": "cifar-100-python/{train, test} (the CIFAR python version)",
}

#: The value that ``--lr``, ``--momentum`` and ``--weight-decay`` take when not given.
ALGORITHM_DEFAULT = "the algorithm's own, see `peergrad algorithms NAME`"
