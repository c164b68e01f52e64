"""Opens a score file with h5py, checks the documented layout, and writes
its `score` and `index` arrays to a safetensors file for comparison.

usage: check_h5.py FILE.h5 OUT.safetensors [none|gzip1|gzip4 (the --compression written; default none)]
"""
import sys

import h5py
import numpy as np
from safetensors.numpy import save_file

REQUIRED_ATTRS = ["format", "dataset", "split", "input_shape", "source", "source_config",
                  "t", "sigma_t", "score_std", "c_t", "fingerprint", "version"]


def main():
    path, out = sys.argv[1], sys.argv[2]
    expected = sys.argv[3] if len(sys.argv) > 3 else "none"
    with h5py.File(path, "r") as f:
        assert set(f.keys()) == {"score", "index"}, list(f.keys())
        score, index = f["score"], f["index"]
        assert score.dtype == np.float32, score.dtype
        assert index.dtype == np.uint64, index.dtype
        assert score.chunks is not None and score.chunks[1:] == score.shape[1:], score.chunks
        if expected == "none":
            assert score.compression is None and not score.shuffle, (score.compression, score.shuffle)
        else:
            level = int(expected.removeprefix("gzip"))
            assert score.compression == "gzip" and score.compression_opts == level and score.shuffle, \
                (score.compression, score.compression_opts, score.shuffle)
        missing = [a for a in REQUIRED_ATTRS if a not in f.attrs]
        assert not missing, f"missing attributes {missing}"
        assert f.attrs["format"] == "taser-scores/1"
        assert tuple(f.attrs["input_shape"]) == score.shape[1:]
        assert index.shape == (score.shape[0],)
        assert np.array_equal(index[:], np.arange(score.shape[0], dtype=np.uint64))
        save_file({"score": np.ascontiguousarray(score[:]), "index": index[:].astype(np.int64)}, out)
        print(f"h5py: score {score.shape} {score.dtype} chunks {score.chunks} {score.compression}; "
              f"{len(f.attrs)} attributes; dataset={f.attrs['dataset']} source={f.attrs['source']}")


if __name__ == "__main__":
    main()
