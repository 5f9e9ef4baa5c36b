import pytest
import torch

torch.set_flush_denormal(True)  # denormals slow CPU kernels up to 10x (training.runtime.device)


@pytest.fixture(scope="session")
def phantoms():
    """48 training + 16 held-out 2-D phantoms at 64 px (HU images, label maps)."""
    from training.data.synthetic import make_slices
    return make_slices(48, seed=11, size=64), make_slices(16, seed=12, size=64)


@pytest.fixture()
def prep64():
    from training.data.preprocessing import Preprocessing
    return Preprocessing(input_size=64, modality="CT")
