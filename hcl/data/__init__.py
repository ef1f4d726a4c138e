"""Data: hierarchical data sets, multi-view transforms and the hierarchical batch sampler."""

from hcl.data.base import HierarchicalDataset
from hcl.data.cifar import CIFAR100
from hcl.data.deepfashion import DeepFashionInShop
from hcl.data.fashion_mnist import FASHION_MNIST_CLASSES, FashionMNIST
from hcl.data.folder import HierarchicalImageFolder
from hcl.data.registry import DATASETS, build_dataset, dataset_options
from hcl.data.sampler import HierarchicalBatchSampler, sampler_coverage
from hcl.data.synthetic import SyntheticHierarchy
from hcl.data.transforms import MultiViewTransform, eval_transform, supcon_augmentation
from hcl.data.wordnet import wordnet_available, wordnet_paths

__all__ = [
    "CIFAR100",
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "DeepFashionInShop",
    "FashionMNIST",
    "HierarchicalBatchSampler",
    "HierarchicalDataset",
    "HierarchicalImageFolder",
    "MultiViewTransform",
    "SyntheticHierarchy",
    "build_dataset",
    "dataset_options",
    "eval_transform",
    "sampler_coverage",
    "supcon_augmentation",
    "wordnet_available",
    "wordnet_paths",
]
