import numpy as np
import pytest
import torch

from training.data.datasets import (
    ArrayDataset,
    CSVDataset,
    DataError,
    VolumeFolderDataset,
    fold_csv_paths,
    parse_label,
)
from training.data.preprocessing import scale_to_unit


def test_array_dataset_uses_shared_preprocessing(prep64):
    img = np.full((80, 80), 40.0, np.float32)  # window centre -> 0.5
    mask = np.zeros((80, 80), np.uint8)
    mask[:40] = 1
    ds = ArrayDataset([img], [mask], prep=prep64)
    x, y = ds[0]
    assert x.shape == (1, 64, 64) and y.shape == (64, 64) and y.dtype == torch.int64
    assert torch.allclose(x, torch.full_like(x, 0.5), atol=1e-5)
    assert y[:32].eq(1).all() and y[32:].eq(0).all()
    unit = scale_to_unit(img, prep64, "CT")
    assert np.allclose(unit, 0.5)


def test_volume_in_memory_is_sliced(prep64):
    vol = np.random.default_rng(0).normal(size=(5, 32, 32)).astype(np.float32)
    lab = np.zeros((5, 32, 32), np.int64)
    ds = ArrayDataset([vol], [lab], prep=prep64, names=["v"])
    assert len(ds) == 5 and ds.groups() == ["v"] * 5


def test_mask_shape_mismatch_is_an_error(prep64):
    with pytest.raises(DataError, match="does not match"):
        ArrayDataset([np.zeros((32, 32))], [np.zeros((32, 30))], prep=prep64)
    with pytest.raises(DataError, match="does not match"):
        ArrayDataset([np.zeros((3, 32, 32))], [np.zeros((2, 32, 32))], prep=prep64)


def test_labels_beyond_classes_and_empty_sets(prep64):
    ds = ArrayDataset([np.zeros((8, 8))], [np.full((8, 8), 7)], prep=prep64)
    with pytest.raises(DataError, match="outside 0..4"):
        ds.validate(5)
    with pytest.raises(DataError, match="empty"):
        ArrayDataset([], [], prep=prep64).validate(5)
    with pytest.raises(DataError, match="non-integer"):
        ArrayDataset([np.zeros((4, 4))], [np.full((4, 4), 0.5)], prep=prep64)


def test_one_class_warnings(prep64):
    ds = ArrayDataset([np.zeros((4, 4))] * 3, [1, 1, 1], task="classification", prep=prep64)
    with pytest.warns(UserWarning, match="AUC"):
        ds.validate(2)
    seg = ArrayDataset([np.zeros((4, 4))], [np.zeros((4, 4))], prep=prep64)
    with pytest.warns(UserWarning, match="foreground"):
        seg.validate(2)


def test_csv_segmentation_and_classification(tmp_path, prep64):
    from skimage.io import imsave
    rng = np.random.default_rng(0)
    rows_seg, rows_cls = ["image,mask"], ["image,label"]
    for i in range(3):
        img = (rng.random((40, 40)) * 255).astype(np.uint8)
        m = np.zeros((40, 40), np.uint8)
        m[10:20, 10:20] = 1
        imsave(tmp_path / f"i{i}.png", img, check_contrast=False)
        np.save(tmp_path / f"m{i}.npy", m)
        rows_seg.append(f"i{i}.png,m{i}.npy")
        rows_cls.append(f"i{i}.png,{['negative', 'positive', '2'][i]}")
    (tmp_path / "train_fold1.csv").write_text("\n".join(rows_seg) + "\n")
    (tmp_path / "cls.csv").write_text("\n".join(rows_cls) + "\n")
    paths = fold_csv_paths(tmp_path, 1)
    ds = CSVDataset(paths["train"], "segmentation", prep64)
    x, y = ds[1]
    assert ds.task == "segmentation" and x.shape == (1, 64, 64) and y.max() == 1
    cls = CSVDataset(tmp_path / "cls.csv", prep=prep64)
    assert cls.task == "classification" and cls.labels().tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="outside"):
        cls.validate(2)
    with pytest.raises(DataError, match="mask"):
        CSVDataset(tmp_path / "cls.csv", "segmentation", prep64)


def test_csv_missing_file_and_bad_label(tmp_path, prep64):
    (tmp_path / "a.csv").write_text("image,mask\nnope.png,nope.npy\n")
    with pytest.raises(DataError, match="not found"):
        CSVDataset(tmp_path / "a.csv", prep=prep64)[0]
    with pytest.raises(DataError, match="cannot interpret"):
        parse_label("maybe", ["cat", "dog"])
    assert parse_label("Dog", ["cat", "dog"]) == 1


def test_volume_folder_nifti(tmp_path, prep64):
    from training.data.synthetic import write_case
    for s in (1, 2):
        write_case(s, tmp_path, shape=(4, 48, 48), dicom=False)
    ds = VolumeFolderDataset(tmp_path / "images", tmp_path / "labels", prep=prep64,
                             modality="CT")
    assert len(ds) == 8 and set(ds.groups()) == {"case0001", "case0002"}
    x, y = ds[0]
    assert x.shape == (1, 64, 64) and y.max() <= 4
    ds.validate(5)
    (tmp_path / "labels" / "case0002.nii.gz").unlink()
    with pytest.raises(DataError, match="no label volume"):
        VolumeFolderDataset(tmp_path / "images", tmp_path / "labels", prep=prep64)


def test_volume_folder_shape_mismatch(tmp_path, prep64):
    from training.data.synthetic import write_nifti
    write_nifti(np.zeros((3, 16, 16), np.float32), tmp_path / "img" / "a.nii.gz")
    write_nifti(np.zeros((3, 16, 12), np.uint8), tmp_path / "lab" / "a.nii.gz")
    with pytest.raises(DataError, match="does not match"):
        VolumeFolderDataset(tmp_path / "img", tmp_path / "lab", prep=prep64)


def test_dicom_series_folder_needs_reader(tmp_path, prep64):
    from training.data.synthetic import write_case
    write_case(3, tmp_path, shape=(3, 32, 32), nifti=False)
    try:
        import training.io  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="training.io"):
            VolumeFolderDataset(tmp_path / "dicom", tmp_path / "labels", prep=prep64)
    else:
        ds = VolumeFolderDataset(tmp_path / "dicom", tmp_path / "labels", prep=prep64)
        assert len(ds) == 3
