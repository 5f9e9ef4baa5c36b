import pytest


@pytest.fixture()
def prep64():
    from training.data.preprocessing import Preprocessing
    return Preprocessing(input_size=64, modality="CT")
