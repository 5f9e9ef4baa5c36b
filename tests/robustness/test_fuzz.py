"""Issue 13: a bounded fuzz campaign over real DICOM and NIfTI files (fixed seed, ~25 s).
Every mutated file is loaded or refused with ImageReadError: never another exception, a
hang or a memory blow-up."""
from __future__ import annotations

import json

from .fuzz import campaign, corpus


def test_mutated_dicom_and_nifti_are_loaded_or_refused(tmp_path):
    assert len(corpus()) > 50
    counts, problems = campaign(tmp_path, cases=1500, seed=13, time_budget=25.0)
    print("fuzz:", json.dumps(counts))
    assert counts["tried"] >= 100
    del counts["elapsed_s"]
    assert counts["loaded"] > 0 and counts["refused"] > 0
    assert counts["crashed"] == 0 and counts["hung"] == 0, json.dumps(problems[:5], indent=1)
