"""A STAR LM's special ids survive copies: the byte-level defaults were recognised by the
identity of a module-level dict, so ``copy.deepcopy`` (or anything that rebuilt the dict)
turned BOS/EOS/PAD into None, and an LM exported from such a copy carried no special ids
(tests/test_lm_onnx.py::test_metadata_carries_the_contract failed in a full run)."""

from __future__ import annotations

import copy
import pickle

import pytest

from staredge.errors import ConfigError
from staredge.models.star.backbone import check_special_ids
from staredge.models.star.genome import transformer_pp
from staredge.models.star.backbone import STARLanguageModel


def _model(**kw):
    return STARLanguageModel(16, 2, transformer_pp(16, 2), max_seq_len=8, **kw)


@pytest.mark.parametrize("clone", [copy.deepcopy, copy.copy, lambda m: pickle.loads(pickle.dumps(m)),
                                   lambda m: STARLanguageModel.from_config_dict(m.config_dict())])
def test_byte_ids_survive_a_copy(clone):
    m = clone(_model())
    assert (m.bos_id, m.eos_id, m.pad_id) == (256, 257, 258)


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda m: STARLanguageModel.from_config_dict(m.config_dict())])
def test_own_ids_survive_a_copy_and_missing_ones_are_none(clone):
    m = clone(_model(special_ids={"eos_id": 3}))
    assert (m.bos_id, m.eos_id, m.pad_id) == (None, 3, None)


def test_special_ids_are_checked():
    assert check_special_ids(None, 10) == {}
    assert check_special_ids({"bos_id": 1}, 10) == {"bos_id": 1, "eos_id": None, "pad_id": None}
    with pytest.raises(ConfigError, match="unknown key"):
        check_special_ids({"cls_id": 1}, 10)
