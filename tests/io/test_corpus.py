"""Every file of pydicom's and pydicom-data's test corpora loads or raises our clear error.

About 250 files, ~5-10 s on 2 cores; the counts are written to the test log.
"""

import logging
import os

import pytest
from pydicom.data import get_testdata_files

from training.io import ImageReadError, read_image


def corpus_files() -> list[str]:
    files = {os.path.realpath(f) for f in get_testdata_files() if os.path.isfile(f)}
    try:
        import data_store  # the pydicom-data package

        d = os.path.join(os.path.dirname(data_store.__file__), "data")
        files |= {os.path.realpath(os.path.join(d, f)) for f in os.listdir(d)}
    except ImportError:
        pass
    return sorted(files)


@pytest.mark.slow
def test_corpus_sweep_loads_or_refuses_clearly(capsys):
    files = corpus_files()
    assert len(files) > 150
    loaded, refused, other = [], [], []
    logging.disable(logging.WARNING)
    try:
        for f in files:
            try:
                vols = read_image(f)
                assert vols and all(v.array.size for v in vols)
                loaded.append(f)
            except ImageReadError as e:
                assert f in str(e) or e.path == f, str(e)
                assert e.reason
                refused.append((f, e.reason))
            except Exception as e:  # noqa: BLE001 - this is what the test hunts
                other.append((f, repr(e)))
    finally:
        logging.disable(logging.NOTSET)
    with capsys.disabled():
        print(f"\ncorpus: {len(files)} files, {len(loaded)} loaded, {len(refused)} refused")
    assert not other, other
    # well-known files must load
    names = {os.path.basename(f) for f in loaded}
    for must in ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "SC_rgb.dcm", "rtdose.dcm"):
        assert must in names


def test_corpus_folder_reads_good_files_and_reports_the_rest():
    from pydicom.data import get_testdata_file

    folder = os.path.dirname(get_testdata_file("CT_small.dcm"))
    logging.disable(logging.WARNING)
    try:
        vols = read_image(os.path.join(folder, "dicomdirtests", "77654033"))
    finally:
        logging.disable(logging.NOTSET)
    assert vols
    assert all(isinstance(r, str) and r for _, r in vols.report.skipped)
